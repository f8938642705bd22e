"""Alerts against real collectors, PostgreSQL and Mosquitto: readings published as agents do,
thresholds with holds and hysteresis, late data with true times, one evaluating replica and
its failover, acknowledgement by role, and the API's validation."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web

from collector.alerts import evaluator
from collector.alerts.evaluator import EVALUATION_LOCK, AlertEvaluator
from collector.analytics.equipment import Plant as Plant_
from collector.analytics.equipment_store import EquipmentStore
from collector.config import AlertSettings, CollectorConfig
from collector.metrics import CollectorMetrics
from collector.state import METRICS
from shared.mqtt import MqttClient
from shared.readings import DataType, Quality, Reading, datetime_to_us
from shared.wire import Topics, encode_batch
from tests.harness import AUTH, eventually, replica_configs, running_collector_app
from tests.receiver import Receiver
from tests.servers import MosquittoServer, free_port

pytestmark = pytest.mark.integration
FAST = {"interval": "100ms", "lock_retry": "200ms"}
AGENT = "press-1"
SUBJECT = f"{AGENT}/press/temp"


@pytest.fixture
def alerts_config(
    plant_collector_config: Callable[..., CollectorConfig],
) -> Callable[..., CollectorConfig]:
    return lambda **more: plant_collector_config(sections={"alerts": {**FAST, **more}})


@pytest.fixture
async def base(alerts_config: Callable[..., CollectorConfig]) -> AsyncIterator[str]:
    async with running_collector_app(alerts_config()) as (_, url):
        yield url


async def call(
    method: str, url: str, body: Any = None, key: str | None = None, **params: str
) -> tuple[int, Any]:
    """An API call, with the admin test key unless another is given."""
    headers = AUTH if key is None else {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.request(method, url, json=body, params=params) as response,
    ):
        return response.status, await response.json(content_type=None)


class Plant:
    """Publishes an agent's batches of one temperature tag, numbering them as an agent does."""

    def __init__(self, publisher: MqttClient, prefix: str) -> None:
        self._publisher = publisher
        self._topic = Topics(prefix).batch(AGENT)
        self._seqs = count(1)

    async def send(
        self, points: Sequence[tuple[datetime, float]], quality: Quality = Quality.GOOD
    ) -> None:
        readings = [
            Reading("press", "temp", DataType.FLOAT64, datetime_to_us(at), value, quality)
            for at, value in points
        ]
        seqs = [next(self._seqs) for _ in readings]
        await self._publisher.publish(
            self._topic, encode_batch(AGENT, 1, seqs, readings), timeout=5
        )


@pytest.fixture
def plant(publisher: MqttClient, topic_prefix: str) -> Plant:
    return Plant(publisher, topic_prefix)


def threshold(**more: Any) -> dict[str, Any]:
    return {
        "kind": "tag_threshold",
        "device": "press",
        "tag": "temp",
        "direction": "above",
        "threshold": 90,
        **more,
    }


async def add_rule(base: str, **condition: Any) -> dict[str, Any]:
    status, made = await call(
        "POST",
        f"{base}/api/v1/alert-rules",
        {"name": "hot press", "condition": threshold(**condition)},
    )
    assert status == 201, made
    return dict(made)


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def alert_events(url: str) -> list[tuple[str, int, str]]:
    """(kind, alert id, state) of every alert event, in order."""
    return [
        (kind, int(body["id"]), body["state"])
        for kind, body in rows(
            url, "SELECT kind, body FROM events WHERE kind LIKE 'alert.%%' ORDER BY id"
        )
    ]


def alerts_stored(url: str) -> list[tuple[Any, ...]]:
    return rows(
        url,
        "SELECT subject, state, started_at, fired_at, resolved_at, late, value FROM alerts"
        " ORDER BY started_at",
    )


async def until_evaluated(url: str, what: str, check: Callable[[], bool]) -> None:
    async def done() -> bool:
        return check()

    await eventually(done, timeout=20, what=what)


def backdate(url: str, rule_id: str, by: timedelta) -> None:
    """The rule has existed for `by` already (what it evaluates starts then)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE alert_rules SET evaluated_from = evaluated_from - %s WHERE id = %s",
            (by, rule_id),
        )


async def test_a_hold_and_hysteresis_give_one_alert_with_its_true_times_and_events(
    base: str, plant: Plant, database_url: str
) -> None:
    rule = await add_rule(base, clear_threshold=80, hold_seconds=10)
    t0 = datetime.now(UTC) + timedelta(seconds=1)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    await plant.send([(at(0), 50), (at(1), 95), (at(5), 85)])
    await until_evaluated(database_url, "pending", lambda: len(alerts_stored(database_url)) == 1)
    await plant.send([(at(12), 96), (at(15), 81)])
    await until_evaluated(
        database_url, "firing", lambda: alerts_stored(database_url)[0][1] == "firing"
    )
    await plant.send([(at(20), 79), (at(21), 85)])
    await until_evaluated(
        database_url, "resolved", lambda: alerts_stored(database_url)[0][1] == "resolved"
    )
    assert alerts_stored(database_url) == [
        (SUBJECT, "resolved", at(1), at(11), at(20), False, 95.0)
    ]
    alert_id = rows(database_url, "SELECT id FROM alerts")[0][0]
    assert alert_events(database_url) == [
        ("alert.pending", alert_id, "pending"),
        ("alert.firing", alert_id, "firing"),
        ("alert.resolved", alert_id, "resolved"),
    ]
    status, listed = await call("GET", f"{base}/api/v1/alerts", rule=rule["id"])
    assert status == 200, listed
    (shown,) = listed["items"]
    assert (shown["id"], shown["kind"], shown["subject"], shown["late"]) == (
        alert_id,
        "tag_threshold",
        SUBJECT,
        False,
    )


async def test_a_backlog_after_an_outage_records_the_alert_late_with_its_true_times(
    base: str, plant: Plant, database_url: str
) -> None:
    rule = await add_rule(base)
    backdate(database_url, rule["id"], timedelta(hours=1))
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    # The agent was cut off for half an hour; its buffer arrives now, in order.
    await plant.send([(t0, 50), (t0 + timedelta(minutes=1), 95), (t0 + timedelta(minutes=5), 70)])
    await until_evaluated(
        database_url, "the late alert", lambda: len(alerts_stored(database_url)) == 1
    )
    assert alerts_stored(database_url) == [
        (
            SUBJECT,
            "resolved",
            t0 + timedelta(minutes=1),
            t0 + timedelta(minutes=1),
            t0 + timedelta(minutes=5),
            True,
            95.0,
        )
    ]
    status, listed = await call("GET", f"{base}/api/v1/alerts", late="true")
    assert (status, len(listed["items"])) == (200, 1)
    status, listed = await call("GET", f"{base}/api/v1/alerts", late="false")
    assert (status, listed["items"]) == (200, [])


async def test_late_readings_between_evaluated_ones_add_an_episode_once(
    base: str, plant: Plant, database_url: str
) -> None:
    rule = await add_rule(base)
    backdate(database_url, rule["id"], timedelta(hours=1))
    t0 = datetime.now(UTC) - timedelta(minutes=30)

    def at(minutes: float) -> datetime:
        return t0 + timedelta(minutes=minutes)

    await plant.send([(at(0), 50), (at(10), 95), (at(11), 50), (at(20), 50)])
    await until_evaluated(database_url, "the first", lambda: len(alerts_stored(database_url)) == 1)
    await eventually(
        lambda: _evaluated_until(database_url, at(20)), timeout=20, what="evaluated to 20 min"
    )
    # Readings of 5 and 15 minutes arrive after 20 was evaluated (a resent buffer), twice.
    for _ in range(2):
        await plant.send([(at(5), 97), (at(7), 60), (at(15), 93)])
    await until_evaluated(database_url, "late ones", lambda: len(alerts_stored(database_url)) == 3)
    assert [(a[2], a[4], a[5]) for a in alerts_stored(database_url)] == [
        (at(5), at(7), True),
        (at(10), at(11), True),
        # Firing from 15 minutes to the reading of 20 (50), the next one evaluated.
        (at(15), at(20), True),
    ]
    # Every log row taken up: nothing is evaluated a second time later.
    await until_evaluated(
        database_url,
        "the log taken up",
        lambda: rows(database_url, "SELECT count(*) FROM alert_log")[0][0] == 0,
    )
    kinds = [kind for kind, _, _ in alert_events(database_url)]
    assert kinds.count("alert.firing") == 3
    assert kinds.count("alert.resolved") == 3
    # Evaluating all of it again finds nothing new: each episode fires once.
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO alert_log (tag_ids, lo, hi) SELECT array_agg(tag_id), %s, %s FROM tags",
            (at(-1), at(21)),
        )
    await until_evaluated(
        database_url,
        "the log taken up again",
        lambda: rows(database_url, "SELECT count(*) FROM alert_log")[0][0] == 0,
    )
    assert len(alerts_stored(database_url)) == 3
    assert [kind for kind, _, _ in alert_events(database_url)] == kinds


async def _evaluated_until(url: str, moment: datetime) -> bool:
    found = rows(url, "SELECT evaluated_until FROM alert_state")
    return bool(found) and found[0][0] >= moment


def owner_of(apps: Sequence[web.Application]) -> list[float]:
    """Each app's alert_owner gauge (-1: not exported)."""
    values = [
        app[METRICS].registry.get_sample_value("plantwire_collector_alert_owner") for app in apps
    ]
    return [-1.0 if value is None else value for value in values]


async def test_two_replicas_one_evaluates_and_the_other_takes_over_without_a_gap(
    database_url: str,
    mosquitto: MosquittoServer,
    topic_prefix: str,
    plant: Plant,
) -> None:
    receiver = Receiver()
    await receiver.start()
    configs = replica_configs(database_url, mosquitto.url, topic_prefix, {"alerts": FAST})
    async with contextlib.AsyncExitStack() as outer:
        outer.push_async_callback(receiver.stop)
        stacks = [contextlib.AsyncExitStack() for _ in configs]
        apps, bases = [], []
        for stack, config in zip(stacks, configs, strict=True):
            await outer.enter_async_context(stack)
            app, url = await stack.enter_async_context(running_collector_app(config))
            apps.append(app)
            bases.append(url)

        async def one_owner() -> bool:
            return sorted(owner_of(apps)) == [0.0, 1.0]

        await eventually(one_owner, timeout=20, what="one replica owning the evaluation")
        owner = owner_of(apps).index(1.0)
        other = 1 - owner
        status, hook = await call(
            "POST",
            f"{bases[other]}/api/v1/webhooks",
            {"url": receiver.url, "kinds": ["alert.firing", "alert.resolved"]},
        )
        assert status == 201, hook
        receiver.secrets.append(hook["secret"])
        await add_rule(bases[other])
        t0 = datetime.now(UTC) + timedelta(seconds=1)
        await plant.send([(t0, 95)])
        await until_evaluated(database_url, "firing", lambda: len(alerts_stored(database_url)) == 1)
        evaluations = [
            app[METRICS].registry.get_sample_value("plantwire_collector_alert_evaluations_total")
            for app in apps
        ]
        assert (evaluations[owner] or 0) > 0
        assert evaluations[other] == 0
        # The owner stops mid-episode; the other takes over where it stood.
        await stacks[owner].aclose()

        async def taken_over() -> bool:
            return owner_of([apps[other]]) == [1.0]

        await eventually(taken_over, timeout=20, what="the other replica taking over")
        await plant.send([(t0 + timedelta(seconds=1), 50), (t0 + timedelta(seconds=2), 99)])
        await until_evaluated(
            database_url, "the second", lambda: len(alerts_stored(database_url)) == 2
        )

        async def delivered() -> bool:
            return len(receiver.delivered()) == 3

        await eventually(delivered, timeout=20, what="three webhooks")
    first, second = alerts_stored(database_url)
    assert (first[1], first[2], first[4]) == ("resolved", t0, t0 + timedelta(seconds=1))
    assert (second[1], second[2]) == ("firing", t0 + timedelta(seconds=2))
    kinds = [kind for kind, _, _ in alert_events(database_url)]
    assert kinds == ["alert.firing", "alert.resolved", "alert.firing"]
    assert [d.payload["type"] for d in receiver.delivered()] == kinds
    assert len({d.webhook_id for d in receiver.delivered()}) == 3


async def test_a_replica_without_the_lock_never_evaluates(
    alerts_config: Callable[..., CollectorConfig], plant: Plant, database_url: str
) -> None:
    # Another session holds the lock, as a replica that cannot be reached would.
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (EVALUATION_LOCK,))
        async with running_collector_app(alerts_config()) as (app, base):
            await add_rule(base)
            await plant.send([(datetime.now(UTC) + timedelta(seconds=1), 95)])
            await eventually(
                lambda: _logged(database_url), timeout=20, what="the batch written and logged"
            )
            assert owner_of([app]) == [0.0]
            assert alerts_stored(database_url) == []
            holder.execute("SELECT pg_advisory_unlock(%s)", (EVALUATION_LOCK,))
            await until_evaluated(
                database_url, "after", lambda: len(alerts_stored(database_url)) == 1
            )


async def _logged(url: str) -> bool:
    return bool(rows(url, "SELECT count(*) FROM alert_log")[0][0])


async def new_key(base: str, role: str) -> str:
    status, made = await call(
        "POST", f"{base}/api/v1/api-keys", {"name": f"{role} on shift", "role": role}
    )
    assert status == 201, made
    return str(made["key"])


async def firing_alert(base: str, plant: Plant, database_url: str) -> int:
    await add_rule(base)
    await plant.send([(datetime.now(UTC), 95)])
    await until_evaluated(database_url, "firing", lambda: len(alerts_stored(database_url)) == 1)
    return int(rows(database_url, "SELECT id FROM alerts")[0][0])


async def test_an_operator_acknowledges_once_and_a_viewer_may_only_look(
    base: str, plant: Plant, database_url: str
) -> None:
    alert_id = await firing_alert(base, plant, database_url)
    viewer, operator = await new_key(base, "viewer"), await new_key(base, "operator")
    url = f"{base}/api/v1/alerts/{alert_id}"
    status, problem = await call("POST", f"{url}/acknowledge", {"comment": "x"}, key=viewer)
    assert (status, problem["status"]) == (403, 403)
    status, shown = await call("GET", url, key=viewer)
    assert (status, shown["acknowledged_at"]) == (200, None)
    status, acked = await call(
        "POST", f"{url}/acknowledge", {"comment": "cooling checked"}, key=operator
    )
    assert status == 200, acked
    assert acked["acknowledged_by"] == f"operator on shift (key {operator[4:12]})"
    assert acked["ack_comment"] == "cooling checked"
    assert acked["state"] == "firing"
    status, problem = await call(
        "POST", f"{url}/acknowledge", {"comment": "nul \u0000"}, key=operator
    )
    assert (status, problem["invalid_params"][0]["name"]) == (400, "comment")
    status, again = await call("POST", f"{url}/acknowledge", {}, key=operator)
    assert status == 409, again
    assert "operator on shift" in again["detail"]
    assert [kind for kind, _, _ in alert_events(database_url)] == [
        "alert.firing",
        "alert.acknowledged",
    ]
    status, missing = await call(
        "POST", f"{base}/api/v1/alerts/999999/acknowledge", {}, key=operator
    )
    assert (status, missing["invalid_params"][0]["name"]) == (404, "id")
    status, missing = await call("GET", f"{base}/api/v1/alerts/999999", key=viewer)
    assert status == 404
    status, _ = await call("GET", f"{base}/api/v1/alert-rules", key=operator)
    assert status == 403


async def test_changing_disabling_and_deleting_a_rule_resolve_its_open_alerts(
    base: str, plant: Plant, database_url: str
) -> None:
    alert_id = await firing_alert(base, plant, database_url)
    (rule_id,) = rows(database_url, "SELECT id FROM alert_rules")[0]
    url = f"{base}/api/v1/alert-rules/{rule_id}"
    status, renamed = await call("PATCH", url, {"name": "very hot press"})
    assert (status, renamed["name"]) == (200, "very hot press")
    assert alerts_stored(database_url)[0][1] == "firing"
    status, changed = await call("PATCH", url, {"condition": threshold(threshold=120)})
    assert status == 200, changed
    assert changed["condition"]["threshold"] == 120
    assert changed["evaluated_from"] > renamed["evaluated_from"]
    status, shown = await call("GET", f"{base}/api/v1/alerts/{alert_id}")
    assert (shown["state"], shown["resolved_reason"]) == (
        "resolved",
        "rule changed by key 7e57ab1e",
    )
    assert rows(database_url, "SELECT count(*) FROM alert_state")[0][0] == 0
    # The changed rule fires on its new threshold only.
    await plant.send([(datetime.now(UTC), 125)])
    await until_evaluated(database_url, "again", lambda: len(alerts_stored(database_url)) == 2)
    status, disabled = await call("PATCH", url, {"enabled": False})
    assert (status, disabled["enabled"]) == (200, False)
    assert [a[1] for a in alerts_stored(database_url)] == ["resolved", "resolved"]
    status, enabled = await call("PATCH", url, {"enabled": True})
    assert (status, enabled["enabled"]) == (200, True)
    await plant.send([(datetime.now(UTC), 130)])
    await until_evaluated(database_url, "third", lambda: len(alerts_stored(database_url)) == 3)
    status, deleted = await call("DELETE", url)
    assert (status, deleted["id"]) == (200, rule_id)
    status, listed = await call("GET", f"{base}/api/v1/alerts", rule=rule_id, state="resolved")
    assert listed["items"][0]["resolved_reason"] == "rule deleted by key 7e57ab1e"
    assert len(listed["items"]) == 3
    for method in ("GET", "DELETE", "PATCH"):
        status, problem = await call(method, url, {} if method == "PATCH" else None)
        assert (status, problem["invalid_params"][0]["name"]) == (404, "id")


async def test_rules_and_alerts_are_listed_a_page_at_a_time(
    base: str, plant: Plant, database_url: str
) -> None:
    made = [await add_rule(base, threshold=90 + n) for n in range(3)]
    status, page = await call("GET", f"{base}/api/v1/alert-rules", limit="2")
    assert status == 200, page
    status, rest = await call("GET", page["next"].replace("/api", f"{base}/api", 1))
    assert [r["id"] for r in page["items"] + rest["items"]] == sorted(r["id"] for r in made)
    assert rest["next"] is None
    status, one = await call("GET", f"{base}/api/v1/alert-rules/{made[0]['id']}")
    assert (status, one["condition"]) == (200, made[0]["condition"])
    await plant.send([(datetime.now(UTC), 99)])
    await until_evaluated(database_url, "three", lambda: len(alerts_stored(database_url)) == 3)
    status, page = await call(
        "GET", f"{base}/api/v1/alerts", limit="2", subject=SUBJECT, state="firing"
    )
    assert (status, len(page["items"])) == (200, 2)
    status, rest = await call("GET", page["next"].replace("/api", f"{base}/api", 1))
    ids = [a["id"] for a in page["items"] + rest["items"]]
    assert sorted(ids, reverse=True) == ids
    assert len(ids) == 3
    start = page["items"][0]["started_at"]
    status, none = await call(
        "GET",
        f"{base}/api/v1/alerts",
        since=start.replace("Z", "+00:00"),
        until="2100-01-01T00:00:00Z",
        state="pending",
    )
    assert (status, none["items"]) == (200, [])


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"name": "x", "condition": threshold(clear_threshold=95)}, "condition.tag_threshold"),
        (
            {"name": "x", "condition": threshold(direction="below", clear_threshold=85)},
            "condition.tag_threshold",
        ),
        ({"name": "x", "condition": {**threshold(), "kind": "tag_magic"}}, "condition"),
        (
            {"name": "x", "condition": threshold(hold_seconds=-1)},
            "condition.tag_threshold.hold_seconds",
        ),
        ({"name": "x", "condition": threshold(extra=1)}, "condition.tag_threshold.extra"),
        (
            {"name": "x", "condition": threshold(hold_seconds=False)},
            "condition.tag_threshold.hold_seconds",
        ),
        (
            {"name": "x", "condition": {"kind": "agent_offline", "for_seconds": 0}},
            "condition.agent_offline.for_seconds",
        ),
        (
            {
                "name": "x",
                "condition": {"kind": "machine_state", "site": "p", "states": [], "for_seconds": 1},
            },
            "condition.machine_state.states",
        ),
        ({"name": "", "condition": threshold()}, "name"),
        ({"name": "x", "condition": threshold(), "enabled": 1}, "enabled"),
    ],
)
async def test_invalid_rules_are_refused_naming_the_field(base: str, body: Any, name: str) -> None:
    status, problem = await call("POST", f"{base}/api/v1/alert-rules", body)
    assert status == 400, problem
    assert [p["name"] for p in problem["invalid_params"]] == [name]


async def test_invalid_alert_queries_are_refused_naming_the_parameter(base: str) -> None:
    cases = [
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"state": "sleeping"}, "state"),
        ({"late": "maybe"}, "late"),
        ({"rule": "nope"}, "rule"),
        ({"cursor": "bm9wZQ"}, "cursor"),
    ]
    for params, name in cases:
        status, problem = await call("GET", f"{base}/api/v1/alerts", **params)
        assert status == 400, (params, problem)
        assert [p["name"] for p in problem["invalid_params"]] == [name]


async def test_lost_evaluation_state_records_no_episode_twice(
    base: str, plant: Plant, database_url: str
) -> None:
    rule = await add_rule(base, hold_seconds=10)
    backdate(database_url, rule["id"], timedelta(hours=1))
    t0 = datetime.now(UTC) - timedelta(minutes=30)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    await plant.send([(at(0), 95), (at(12), 96), (at(20), 50), (at(30), 95), (at(42), 96)])
    await until_evaluated(database_url, "two", lambda: len(alerts_stored(database_url)) == 2)
    before = alert_events(database_url)
    # Were the evaluation state lost, the unique key keeps each episode once.
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM alert_state")
        conn.execute(
            "INSERT INTO alert_log (tag_ids, lo, hi) SELECT array_agg(tag_id), %s, %s FROM tags",
            (at(0), at(42)),
        )
    await until_evaluated(
        database_url,
        "evaluated again",
        lambda: bool(rows(database_url, "SELECT 1 FROM alert_state")),
    )
    assert [a[1] for a in alerts_stored(database_url)] == ["resolved", "firing"]
    assert alert_events(database_url) == before


async def test_a_long_write_is_evaluated_a_page_at_a_time(
    alerts_config: Callable[..., CollectorConfig],
    plant: Plant,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(evaluator, "PAGE", 3)
    t0 = datetime.now(UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    # One logged write per pass, and two readings at one moment across a page's end: neither
    # is skipped.
    async with running_collector_app(alerts_config(max_log_rows=1)) as (_, base):
        await add_rule(base)
        await plant.send([(at(0), 50), (at(1), 50), (at(2), 50)])
        await plant.send([(at(2), 95), (at(3), 99), (at(4), 10)])
        await until_evaluated(
            database_url,
            "resolved",
            lambda: [a[1] for a in alerts_stored(database_url)] == ["resolved"],
        )
    assert [(a[2], a[4]) for a in alerts_stored(database_url)] == [(at(2), at(4))]


async def test_an_evaluator_without_its_database_says_so_once_and_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = AlertSettings.model_validate({"lock_retry": "50ms"})
    metrics = CollectorMetrics()
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=1"
    running = AlertEvaluator(url, settings, metrics)
    attempts = []
    own = running._own

    async def counted() -> None:
        attempts.append(1)
        await own()

    running._own = counted  # type: ignore[method-assign]
    task = asyncio.create_task(running.run())

    async def tried_thrice() -> bool:
        return len(attempts) >= 3

    try:
        await eventually(tried_thrice, timeout=20, what="three attempts to connect")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert caplog.text.count("alert evaluation lost the database") == 1
    assert metrics.registry.get_sample_value("plantwire_collector_alert_owner") == 0


async def add_condition(base: str, condition: dict[str, Any]) -> dict[str, Any]:
    status, made = await call(
        "POST", f"{base}/api/v1/alert-rules", {"name": condition["kind"], "condition": condition}
    )
    assert status == 201, made
    return dict(made)


def agent_state(status: str) -> bytes:
    """An agent's birth or death message."""
    return json.dumps(
        {"v": 1, "status": status, "version": "1.0", "config_hash": "h", "devices": [], "epoch": 1}
    ).encode()


def states_of(url: str) -> list[str]:
    return [a[1] for a in alerts_stored(url)]


async def test_an_agent_offline_longer_than_its_grace_fires_and_comes_back(
    base: str,
    publisher: MqttClient,
    topic_prefix: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(evaluator, "EVENT_PAGE", 1)  # one event a pass: pages end mid-way
    await add_condition(base, {"kind": "agent_offline", "agent": "press-1", "for_seconds": 0.5})
    topics = Topics(topic_prefix)
    # Another agent's absence is not this rule's business.
    await publisher.publish(topics.state("press-2"), agent_state("offline"), timeout=5)
    await publisher.publish(topics.state("press-1"), agent_state("offline"), timeout=5)
    await until_evaluated(database_url, "firing", lambda: states_of(database_url) == ["firing"])
    await publisher.publish(topics.state("press-1"), agent_state("online"), timeout=5)
    await until_evaluated(database_url, "resolved", lambda: states_of(database_url) == ["resolved"])
    ((subject, _, started, fired, resolved, late, _),) = alerts_stored(database_url)
    since = rows(
        database_url,
        "SELECT body->>'since' FROM events WHERE kind = 'agent.status' AND subject = 'press-1'"
        " ORDER BY id",
    )
    assert subject == "press-1"
    assert (started.isoformat(), resolved.isoformat()) == (since[0][0], since[1][0])
    assert (fired - started, late) == (timedelta(seconds=0.5), False)


async def test_an_agent_already_offline_when_the_rule_is_made_counts_from_then(
    base: str, publisher: MqttClient, topic_prefix: str, database_url: str
) -> None:
    await publisher.publish(
        Topics(topic_prefix).state("press-1"), agent_state("offline"), timeout=5
    )
    await eventually(
        lambda: _has_agent(database_url), timeout=20, what="the agent's state recorded"
    )
    rule = await add_condition(base, {"kind": "agent_offline", "for_seconds": 0.2})
    await until_evaluated(database_url, "firing", lambda: states_of(database_url) == ["firing"])
    started = alerts_stored(database_url)[0][2]
    assert started.isoformat().replace("+00:00", "Z") == rule["evaluated_from"]


async def _tag_known(url: str) -> bool:
    return bool(rows(url, "SELECT 1 FROM tags"))


async def _has_agent(url: str) -> bool:
    return bool(rows(url, "SELECT 1 FROM agents WHERE status = 'offline'"))


async def test_a_tag_whose_data_stops_arriving_goes_stale_until_the_next_write(
    base: str, plant: Plant, database_url: str
) -> None:
    await plant.send([(datetime.now(UTC), 1.0)])
    await eventually(lambda: _tag_known(database_url), timeout=20, what="the tag known")
    rule = await add_condition(
        base, {"kind": "tag_stale", "device": "press", "tag": "temp", "for_seconds": 0.5}
    )
    await until_evaluated(database_url, "stale", lambda: states_of(database_url) == ["firing"])
    await plant.send([(datetime.now(UTC), 2.0)])
    await until_evaluated(
        database_url, "fresh", lambda: states_of(database_url)[:1] == ["resolved"]
    )
    (subject, _, started, fired, resolved, _, _) = alerts_stored(database_url)[0]
    # Silent from when the rule began (the write before it is not its business).
    began = datetime.fromisoformat(rule["evaluated_from"])
    assert (subject, started, fired) == (SUBJECT, began + timedelta(seconds=0.5), started)
    assert resolved > started


async def test_silences_between_writes_the_evaluator_took_up_late_are_found_late(
    alerts_config: Callable[..., CollectorConfig], plant: Plant, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (EVALUATION_LOCK,))
        async with running_collector_app(alerts_config(late_after="1s")) as (_, base):
            rule = await add_condition(
                base, {"kind": "tag_stale", "device": "press", "tag": "temp", "for_seconds": 60}
            )
            await plant.send([(datetime.now(UTC), 1.0)])
            await eventually(lambda: _logged(database_url), timeout=20, what="a write logged")
            (tag_id,) = rows(database_url, "SELECT tag_id FROM tags")[0]
            # Writes that arrived before the evaluator could look: 2 minutes apart.
            t0 = datetime.now(UTC) - timedelta(minutes=10)
            with psycopg.connect(database_url) as conn:
                conn.execute("UPDATE alert_rules SET evaluated_from = %s", (t0,))
                for minutes in (0, 2, 2.5):
                    conn.execute(
                        "INSERT INTO alert_log (tag_ids, lo, hi, logged_at)"
                        " VALUES (%s, %s, %s, %s)",
                        ([tag_id], t0, t0, t0 + timedelta(minutes=minutes)),
                    )
            holder.execute("SELECT pg_advisory_unlock(%s)", (EVALUATION_LOCK,))
            await until_evaluated(
                database_url, "two", lambda: len(alerts_stored(database_url)) >= 1
            )
    (_, state, started, fired, resolved, late, _) = alerts_stored(database_url)[0]
    assert (state, started, fired, resolved, late) == (
        "resolved",
        t0 + timedelta(minutes=1),
        t0 + timedelta(minutes=1),
        t0 + timedelta(minutes=2),
        True,
    )
    assert rule["condition"]["for_seconds"] == 60


def press_plant(agent: str) -> Plant_:
    return Plant_.model_validate(
        {
            "sites": [
                {
                    "id": "plant-1",
                    "time_zone": "UTC",
                    "areas": [{"id": "pressing", "lines": [{"id": "line-1"}]}],
                    "calendar": {"shifts": []},
                    "loss_mapping": {
                        "states": [
                            {"name": "running", "values": [1], "element": "production"},
                            {"name": "down", "values": [3], "element": "delay"},
                        ]
                    },
                    "machines": [
                        {
                            "id": "press-a",
                            "area": "pressing",
                            "line": "line-1",
                            "state": {"tag": "press/state", "agent": agent},
                            "good": {"tag": "press/good", "agent": agent},
                        },
                        {
                            "id": "press-b",
                            "area": "pressing",
                            "line": "line-1",
                            "state": {"tag": "press/other", "agent": agent},
                            "good": {"tag": "press/good2", "agent": agent},
                        },
                    ],
                }
            ]
        }
    )


async def test_a_machine_down_longer_than_allowed_fires_and_running_again_resolves(
    plant_collector_config: Callable[..., CollectorConfig],
    db_pool: Any,
    publisher: MqttClient,
    topic_prefix: str,
    database_url: str,
) -> None:
    await EquipmentStore(db_pool).seed(press_plant(AGENT))
    config = plant_collector_config(
        sections={"alerts": FAST, "analytics": {"derive_interval": "100ms"}}
    )
    topic = Topics(topic_prefix).batch(AGENT)
    seqs = count(1)

    async def state(code: int, at: datetime, tag: str = "state") -> None:
        reading = Reading("press", tag, DataType.UINT16, datetime_to_us(at), code, Quality.GOOD)
        await publisher.publish(topic, encode_batch(AGENT, 1, [next(seqs)], [reading]), timeout=5)

    async with running_collector_app(config) as (_, base):
        first = await add_condition(
            base,
            {"kind": "machine_state", "site": "plant-1", "states": ["down"], "for_seconds": 0.5},
        )
        t0 = datetime.now(UTC)
        await state(1, t0)
        await state(3, t0 + timedelta(milliseconds=100), tag="other")
        await state(3, t0 + timedelta(milliseconds=200))
        await until_evaluated(
            database_url, "firing", lambda: sorted(states_of(database_url)) == ["firing", "firing"]
        )
        # A rule made while press-b is down already counts from when it was made.
        later = await add_condition(
            base,
            {
                "kind": "machine_state",
                "site": "plant-1",
                "machine": "press-b",
                "states": ["down"],
                "for_seconds": 0.2,
            },
        )
        await until_evaluated(database_url, "the later", lambda: len(states_of(database_url)) == 3)
        await state(1, t0 + timedelta(seconds=5))
        await until_evaluated(
            database_url, "resolved", lambda: "resolved" in states_of(database_url)
        )
    found = {
        subject: row
        for subject, *row in rows(
            database_url,
            "SELECT subject, state, started_at, fired_at, resolved_at FROM alerts"
            " WHERE rule_id = %s",
            first["id"],
        )
    }
    assert tuple(found["plant-1/press-a"]) == (
        "resolved",
        t0 + timedelta(milliseconds=200),
        t0 + timedelta(milliseconds=700),
        t0 + timedelta(seconds=5),
    )
    assert found["plant-1/press-b"][0] == "firing"
    (later_started,) = rows(
        database_url, "SELECT started_at FROM alerts WHERE rule_id = %s", later["id"]
    )[0]
    assert later_started == datetime.fromisoformat(later["evaluated_from"])
