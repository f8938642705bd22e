"""Webhooks against real collectors, PostgreSQL and a real receiving HTTP server that verifies
every signature with standardwebhooks: delivery, outages, slow answers, 410, rotation,
replicas, kinds, giving up, and the API that shows it all."""

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from collector.config import CollectorConfig
from collector.events import Event, append_events
from collector.webhooks import FAN_OUT_LOCK, fan_out
from shared.mqtt import MqttClient
from shared.wire import Topics
from tests.harness import AUTH, eventually, metric, replica_configs, running_collector_app
from tests.receiver import Receiver
from tests.servers import MosquittoServer

pytestmark = pytest.mark.integration
Pool = Any
FAST = {"timeout": "500ms", "retry_delays": ["200ms", "300ms"], "poll_interval": "100ms"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def webhook_config(
    plant_collector_config: Callable[..., CollectorConfig],
) -> Callable[..., CollectorConfig]:
    """A collector configuration with short webhook timeouts and retry delays."""
    return lambda **webhooks: plant_collector_config(sections={"webhooks": {**FAST, **webhooks}})


@pytest.fixture
async def base(webhook_config: Callable[..., CollectorConfig]) -> AsyncIterator[str]:
    async with running_collector_app(webhook_config()) as (_, url):
        yield url


async def call(method: str, url: str, body: Any = None, **params: str) -> tuple[int, Any]:
    """An API call with the admin test key."""
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.request(method, url, json=body, params=params) as response,
    ):
        return response.status, await response.json(content_type=None)


async def add_endpoint(base: str, receiver: Receiver, path: str = "/hook", **body: Any) -> Any:
    status, made = await call(
        "POST", f"{base}/api/v1/webhooks", {"url": receiver.url.replace("/hook", path), **body}
    )
    assert status == 201, made
    receiver.secrets.append(made["secret"])
    return made


async def append(pool: Pool, *kinds: str) -> list[int]:
    events = [
        Event(kind=kind, subject=f"s{n}", role="admin", body={"n": n})
        for n, kind in enumerate(kinds)
    ]
    async with pool.connection() as conn, conn.transaction():
        return await append_events(conn, events)


async def messages(base: str, endpoint: str) -> list[dict[str, Any]]:
    status, page = await call("GET", f"{base}/api/v1/webhooks/{endpoint}/messages")
    assert status == 200, page
    items: list[dict[str, Any]] = page["items"]
    return items


async def settled(base: str, endpoint: str, count: int, state: str = "delivered") -> None:
    async def check() -> bool:
        found = await messages(base, endpoint)
        return len(found) == count and all(m["state"] == state for m in found)

    await eventually(check, timeout=20, what=f"{count} messages {state}")


def state(status: str) -> bytes:
    """An agent's birth or death message."""
    return json.dumps(
        {"v": 1, "status": status, "version": "1.0", "config_hash": "h", "devices": [], "epoch": 1}
    ).encode()


async def test_an_agent_going_offline_reaches_the_receiver_signed(
    base: str, receiver: Receiver, publisher: MqttClient, topic_prefix: str
) -> None:
    endpoint = await add_endpoint(base, receiver, kinds=["agent.status"])
    assert endpoint["secret"].startswith("whsec_")
    topic = Topics(topic_prefix).state("press-1")
    await publisher.publish(topic, state("online"), timeout=5)
    await settled(base, endpoint["id"], 1)
    await publisher.publish(topic, state("offline"), timeout=5)
    await settled(base, endpoint["id"], 2)
    online, offline = receiver.delivered()
    for delivery in (online, offline):
        verified = Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers)
        assert verified == delivery.payload
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.headers["webhook-signature"].startswith("v1,")
    assert offline.payload["type"] == "agent.status"
    assert offline.payload["timestamp"].endswith("Z")
    data = offline.payload["data"]
    assert (data["subject"], data["body"]["agent"], data["body"]["status"]) == (
        "press-1",
        "press-1",
        "offline",
    )
    assert offline.webhook_id == f"msg_{endpoint['id']}_{data['id']}"
    listed = await messages(base, endpoint["id"])
    assert [m["webhook_id"] for m in listed] == [online.webhook_id, offline.webhook_id]
    assert all((m["attempts"], m["last_status"], m["last_error"]) == (1, 200, None) for m in listed)


async def test_a_receiver_down_for_a_while_gets_everything_later_in_order(
    base: str, receiver: Receiver, db_pool: Pool
) -> None:
    endpoint = await add_endpoint(base, receiver)
    await receiver.stop()  # not listening: connections are refused
    ids = await append(db_pool, "test.a", "test.b", "test.c")

    async def retried() -> bool:
        found = await messages(base, endpoint["id"])
        return len(found) == 3 and found[0]["attempts"] >= 2

    await eventually(retried, what="the first message retried")
    first, *later = await messages(base, endpoint["id"])
    assert first["state"] == "pending"
    assert first["last_status"] is None
    assert "ClientConnectorError" in first["last_error"]
    # Held back behind the first: never tried while it is pending.
    assert [m["attempts"] for m in later] == [0, 0]

    async def backlog() -> bool:
        return await metric(base, "plantwire_collector_webhook_oldest_pending_seconds") > 0

    await eventually(backlog, timeout=20, what="the backlog's age in the metrics")
    receiver.answers = [503, 503]
    await receiver.start()
    await settled(base, endpoint["id"], 3)
    got = [d.payload["data"]["id"] for d in receiver.delivered()]
    assert got == ids
    tried = [int(r.webhook_id.rsplit("_", 1)[1]) for r in receiver.requests]
    assert tried == sorted(tried)  # no message was tried before an earlier one was delivered
    assert [r.status for r in receiver.requests] == [503, 503, 200, 200, 200]

    status, page = await call(
        "GET", f"{base}/api/v1/webhooks/{endpoint['id']}/messages/{first['id']}/attempts"
    )
    assert status == 200
    attempts = page["items"]
    assert len(attempts) >= 4
    assert page["next"] is None
    assert all(a["status"] is None and a["error"] for a in attempts[:-3])
    assert [a["status"] for a in attempts[-3:]] == [503, 503, 200]
    assert all(a["duration_ms"] >= 0 for a in attempts)
    counted = {
        outcome: await metric(base, "plantwire_collector_webhook_attempts_total", outcome=outcome)
        for outcome in ("delivered", "refused", "unanswered", "gone")
    }
    assert counted == {"delivered": 3, "refused": 2, "unanswered": len(attempts) - 3, "gone": 0}
    assert await metric(base, "plantwire_collector_webhook_delivery_seconds_count") == sum(
        counted.values()
    )
    # One page at a time, following `next`.
    path = f"{base}/api/v1/webhooks/{endpoint['id']}/messages/{first['id']}/attempts"
    status, one = await call("GET", path, limit="1")
    assert [a["id"] for a in one["items"]] == [attempts[0]["id"]]
    status, two = await call("GET", f"{base}{one['next']}")
    assert [a["id"] for a in two["items"]] == [attempts[1]["id"]]
    status, page = await call("GET", f"{base}/api/v1/webhooks/{endpoint['id']}/messages", limit="2")
    assert len(page["items"]) == 2
    status, rest = await call("GET", f"{base}{page['next']}")
    assert [m["event_id"] for m in page["items"] + rest["items"]] == ids
    assert rest["next"] is None


async def test_a_slow_receiver_is_retried(base: str, receiver: Receiver, db_pool: Pool) -> None:
    endpoint = await add_endpoint(base, receiver)
    receiver.delays = [1.5]  # beyond the 500 ms timeout
    await append(db_pool, "test.a")
    await settled(base, endpoint["id"], 1)
    (message,) = await messages(base, endpoint["id"])
    _status, page = await call(
        "GET", f"{base}/api/v1/webhooks/{endpoint['id']}/messages/{message['id']}/attempts"
    )
    late, answered = page["items"]
    assert (late["status"], late["error"]) == (None, "no answer within 0.5s")
    assert late["duration_ms"] >= 450
    assert answered["status"] == 200
    # Both attempts reached the receiver with the same id, so it can tell they are one message.
    assert len(receiver.arrived) == 2
    assert len(set(receiver.arrived)) == 1


async def test_a_410_disables_the_endpoint_until_it_is_enabled_again(
    base: str, receiver: Receiver, db_pool: Pool
) -> None:
    endpoint = await add_endpoint(base, receiver)
    url = f"{base}/api/v1/webhooks/{endpoint['id']}"
    receiver.answers = [410]
    ids = await append(db_pool, "test.a", "test.b")

    async def disabled() -> bool:
        return (await call("GET", url))[1]["enabled"] is False

    await eventually(disabled, what="the endpoint disabled")
    _, shown = await call("GET", url)
    assert "410 Gone" in shown["disabled_reason"]
    assert "secret" not in shown
    later = await append(db_pool, "test.c")

    async def fanned_out() -> bool:
        async with db_pool.connection() as conn:
            row = await (await conn.execute("SELECT last_event_id FROM webhook_cursor")).fetchone()
        return bool(row[0] >= later[0])

    await eventually(fanned_out, what="the fan-out past the last event")
    found = await messages(base, endpoint["id"])
    # Pending, kept; the event appended while disabled is not queued for it.
    assert [(m["event_id"], m["state"]) for m in found] == [(i, "pending") for i in ids]
    assert (found[0]["attempts"], found[0]["last_status"]) == (1, 410)
    assert len(receiver.requests) == 1

    status, paused = await call("PATCH", url, {"enabled": False})
    assert (status, paused["disabled_reason"]) == (200, shown["disabled_reason"])
    status, enabled = await call("PATCH", url, {"enabled": True})
    assert (status, enabled["enabled"], enabled["disabled_reason"]) == (200, True, None)
    await settled(base, endpoint["id"], 2)
    assert [d.payload["data"]["id"] for d in receiver.delivered()] == ids
    status, off = await call("PATCH", url, {"enabled": False})
    assert off["disabled_reason"] == "disabled by key 7e57ab1e"


async def test_a_rotated_secret_and_the_previous_one_both_verify_in_the_grace_period(
    base: str, receiver: Receiver, db_pool: Pool
) -> None:
    endpoint = await add_endpoint(base, receiver)
    old = endpoint["secret"]
    status, rotated = await call("POST", f"{base}/api/v1/webhooks/{endpoint['id']}/rotate-secret")
    assert status == 200
    new = rotated["secret"]
    assert new != old
    assert rotated["previous_secret_until"] is not None
    receiver.secrets = [new]
    await append(db_pool, "test.a")
    await settled(base, endpoint["id"], 1)
    (both,) = receiver.delivered()
    assert len(both.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(both.body, both.headers) == both.payload

    async with db_pool.connection() as conn:
        await conn.execute("UPDATE webhook_endpoints SET previous_until = now() - interval '1s'")
    _, shown = await call("GET", f"{base}/api/v1/webhooks/{endpoint['id']}")
    assert shown["previous_secret_until"] is None
    await append(db_pool, "test.b")
    await settled(base, endpoint["id"], 2)
    only_new = receiver.delivered()[1]
    assert len(only_new.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(only_new.body, only_new.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(only_new.body, only_new.headers)


async def test_two_collectors_deliver_each_message_exactly_once(
    database_url: str,
    mosquitto: MosquittoServer,
    topic_prefix: str,
    receiver: Receiver,
    db_pool: Pool,
) -> None:
    one, two = replica_configs(database_url, mosquitto.url, topic_prefix, {"webhooks": FAST})
    async with running_collector_app(one) as (_, base), running_collector_app(two):
        first = await add_endpoint(base, receiver, path="/one")
        second = await add_endpoint(base, receiver, path="/two")
        ids: list[int] = []
        for _ in range(10):
            ids += await append(db_pool, "test.a", "test.b", "test.c")
        await settled(base, first["id"], 30)
        await settled(base, second["id"], 30)
    assert len(receiver.requests) == 60
    assert len({r.webhook_id for r in receiver.requests}) == 60
    for path in ("/one", "/two"):
        assert [d.payload["data"]["id"] for d in receiver.delivered(path)] == ids


async def test_an_endpoint_gets_only_its_kinds_and_only_events_after_it_was_made(
    base: str, receiver: Receiver, db_pool: Pool
) -> None:
    before = await append(db_pool, "test.a")
    some = await add_endpoint(base, receiver, path="/some", kinds=["test.a", "test.c"])
    every = await add_endpoint(base, receiver, path="/every")
    ids = await append(db_pool, "test.a", "test.b", "test.c")
    await settled(base, some["id"], 2)
    await settled(base, every["id"], 3)
    got_some = [d.payload["data"]["id"] for d in receiver.delivered("/some")]
    got_every = [d.payload["data"]["id"] for d in receiver.delivered("/every")]
    assert got_some == [ids[0], ids[2]]
    assert got_every == ids
    assert before[0] not in got_every
    assert [d.payload["type"] for d in receiver.delivered("/some")] == ["test.a", "test.c"]


async def test_a_message_not_delivered_in_time_fails_and_the_next_one_goes(
    webhook_config: Callable[..., CollectorConfig], receiver: Receiver, db_pool: Pool
) -> None:
    async with running_collector_app(webhook_config(give_up_after="1s")) as (_, base):
        endpoint = await add_endpoint(base, receiver)
        receiver.answers = [500] * 100
        ids = await append(db_pool, "test.a")

        async def failed() -> bool:
            found = await messages(base, endpoint["id"])
            return [m["state"] for m in found] == ["failed"]

        await eventually(failed, what="the message given up")
        receiver.answers = []
        later = await append(db_pool, "test.b")
        await eventually(
            lambda: _delivered(base, endpoint["id"], later[0]), what="the next message"
        )
    (message, _) = await messages_of(db_pool)
    assert message == (ids[0], "failed")
    assert all(r.status == 500 for r in receiver.requests[:-1])


async def _delivered(base: str, endpoint: str, event_id: int) -> bool:
    found = await messages(base, endpoint)
    return any(m["event_id"] == event_id and m["state"] == "delivered" for m in found)


async def messages_of(pool: Pool) -> list[tuple[int, str]]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT event_id, state FROM webhook_messages ORDER BY id")
        return [(row[0], row[1]) for row in await cursor.fetchall()]


async def test_one_collector_fans_out_at_a_time(db_pool: Pool) -> None:
    async with db_pool.connection() as conn:
        await conn.execute(
            "INSERT INTO webhook_endpoints (id, url, secret, after_event_id, created_by)"
            " VALUES ('wh_1', 'http://127.0.0.1:1/', 'whsec_c2VjcmV0', 0, 'tests')"
        )
    await append(db_pool, "test.a", "test.b")
    async with db_pool.connection() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (FAN_OUT_LOCK,))
        async with db_pool.connection() as conn:
            assert await fan_out(conn) == 0
    async with db_pool.connection() as conn:
        assert await fan_out(conn) == 2
        assert await fan_out(conn) == 0
    assert [state for _, state in await messages_of(db_pool)] == ["pending", "pending"]


async def test_the_api_refuses_bad_input_and_unknown_endpoints(
    base: str, receiver: Receiver, db_pool: Pool
) -> None:
    hooks = f"{base}/api/v1/webhooks"
    status, problem = await call("POST", hooks, {"url": "ftp://example.com/x"})
    assert status == 400
    assert problem["invalid_params"][0]["name"] == "url"
    status, problem = await call("POST", hooks, {"url": receiver.url, "kinds": ["Bad Kind"]})
    assert status == 400
    assert problem["invalid_params"][0]["name"] == "kinds.0"
    unknown = f"{hooks}/wh_{'0' * 24}"
    for method, url in (
        ("GET", unknown),
        ("PATCH", unknown),
        ("DELETE", unknown),
        ("POST", f"{unknown}/rotate-secret"),
        ("GET", f"{unknown}/messages"),
    ):
        status, problem = await call(method, url, {} if method == "PATCH" else None)
        assert (status, problem["invalid_params"][0]["name"]) == (404, "id"), (method, url)

    first = await add_endpoint(base, receiver)
    second = await add_endpoint(base, receiver, kinds=["test.a"])
    status, problem = await call("PATCH", f"{hooks}/{first['id']}", {"enabled": 0})
    assert (status, problem["invalid_params"][0]["name"]) == (400, "enabled")
    status, problem = await call("GET", f"{hooks}/{first['id']}/messages/1/attempts")
    assert (status, problem["invalid_params"][0]["name"]) == (404, "message_id")
    status, page = await call("GET", hooks, limit="1")
    assert status == 200
    assert page["next"] is not None
    status, rest = await call("GET", f"{base}{page['next']}")
    listed = page["items"] + rest["items"]
    assert sorted(e["id"] for e in listed) == sorted([first["id"], second["id"]])
    assert rest["next"] is None
    assert all("secret" not in e for e in listed)

    other = receiver.url.replace("/hook", "/other")
    status, changed = await call("PATCH", f"{hooks}/{second['id']}", {"url": other, "kinds": []})
    assert (status, changed["url"], changed["kinds"], changed["enabled"]) == (200, other, [], True)
    await append(db_pool, "test.a")
    await settled(base, first["id"], 1)
    status, gone = await call("DELETE", f"{hooks}/{first['id']}")
    assert (status, gone["id"]) == (200, first["id"])
    assert (await call("GET", f"{hooks}/{first['id']}"))[0] == 404
    async with db_pool.connection() as conn:
        cursor = await conn.execute("SELECT endpoint_id FROM webhook_messages")
        assert [row[0] for row in await cursor.fetchall()] == [second["id"]]
