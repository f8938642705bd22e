"""The collector against real Mosquitto and PostgreSQL: quarantine, exactly-once, API errors."""

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import psycopg
import pytest

from collector.batches import Batch
from collector.cli import main as collector_main
from collector.config import CollectorConfig
from collector.migrate import available_migrations
from collector.store import ReadingStore, WriteOutcome
from shared.mqtt import MqttClient
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.harness import AUTH, collector_config, eventually, get_json, running_collector
from tests.payloads import join, mutate, split
from tests.servers import MosquittoServer, free_port

TS = 1_790_000_000_000_000


@pytest.fixture
def config(database_url: str, mosquitto: MosquittoServer, topic_prefix: str) -> CollectorConfig:
    return collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        max_payload_bytes=4096,
    )


@pytest.fixture
async def collector(config: CollectorConfig) -> AsyncIterator[str]:
    async with running_collector(config) as base:
        yield base


def batch(agent: str, first_seq: int, values: list[float], device: str = "press") -> bytes:
    readings = [
        Reading(device, "temp", DataType.FLOAT64, TS + (first_seq + i) * 1000, value)
        for i, value in enumerate(values)
    ]
    return encode_batch(agent, 42, list(range(first_seq, first_seq + len(values))), readings)


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


async def stored_count(url: str) -> int:
    """Readings in the database, counted off the event loop the collector runs on."""
    return await asyncio.to_thread(count, url, "SELECT count(*) FROM readings")


async def metrics_text(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        return await response.text()


async def test_bad_payloads_are_quarantined_counted_and_ingest_goes_on(
    collector: str, publisher: MqttClient, database_url: str, topic_prefix: str
) -> None:
    good = batch("a1", 1, [1.0, 2.0])
    header, dictionary, columns = split(good)
    bad = {
        "malformed": b"\x00not a batch",
        "version": join(header, dictionary, columns, version=9),
        "schema": mutate(good, type=["float32", "no-such-type"]),
        "agent_mismatch": batch("someone-else", 1, [1.0]),
        "too_large": batch("a1", 1, [1.5] * 400),
    }
    # A bad reading costs only itself: the other reading of each of these batches is stored.
    partly_bad = {
        "timestamp": mutate(batch("a1", 10, [1.0, 2.0]), ts=[TS, 10**18 * 9]),
        "reading": mutate(batch("a1", 20, [1.0, 2.0]), kind=[1, 0]),
    }
    for payload in [*bad.values(), *partly_bad.values()]:
        await publisher.publish(f"{topic_prefix}/v1/a1/batch", payload, timeout=5)
    await publisher.publish(f"{topic_prefix}/v1/bad agent/batch", batch("a1", 1, [1.0]), timeout=5)
    await publisher.publish(f"{topic_prefix}/v1/a1/batch", batch("a1", 1, [1.0, 2.0]), timeout=5)

    async def settled() -> bool:
        return await stored_count(database_url) == 4

    await eventually(settled, what="the good batch after the bad ones")
    assert count(database_url, "SELECT count(*) FROM readings WHERE seq IN (10, 21, 1, 2)") == 4
    whole = len(bad) + 1
    assert count(database_url, "SELECT count(*) FROM dead_letters WHERE NOT partial") == whole
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT topic, payload, error, reason, agent_id, batch_id FROM dead_letters ORDER BY id"
        ).fetchall()
        refused = conn.execute(
            "SELECT d.batch_id, r.idx, r.seq, r.reason, r.error, d.payload FROM dead_readings r"
            " JOIN dead_letters d ON d.id = r.dead_letter_id ORDER BY r.seq"
        ).fetchall()
    assert bytes(rows[0][1]) == bad["malformed"], "the raw bytes are kept"
    assert "not a Plantwire batch" in rows[0][2]
    assert sorted(row[3] for row in rows) == sorted([*bad, "timestamp", "reading", "topic"])
    assert rows[3][4:] == ("a1", None), "an impostor's batch id is not trusted"
    assert [(r[0], r[1], r[2], r[3]) for r in refused] == [
        (10, 1, 11, "timestamp"),
        (20, 0, 20, "reading"),
    ]
    assert "timestamp 9000000000000000000 µs since 1970 outside 2000-01-01" in refused[0][4]
    assert bytes(refused[0][5]) == partly_bad["timestamp"], "the raw batch is kept once"
    text = await metrics_text(collector)
    for reason in [*bad, "topic"]:
        assert f'plantwire_collector_dead_letters_total{{reason="{reason}"}} 1.0' in text
    for reason in partly_bad:
        assert f'plantwire_collector_refused_readings_total{{reason="{reason}"}} 1.0' in text
    assert 'plantwire_collector_messages_total{outcome="quarantined"} 6.0' in text


async def test_a_batch_sent_twice_is_stored_once(
    collector: str, publisher: MqttClient, database_url: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}/v1/a1/batch"
    await publisher.publish(topic, batch("a1", 1, [1.0, 2.0, 3.0]), timeout=5)
    await publisher.publish(topic, batch("a1", 1, [1.0, 2.0, 3.0]), timeout=5)
    await publisher.publish(topic, batch("a1", 4, [4.0]), timeout=5)

    async def all_handled() -> bool:
        text = await metrics_text(collector)
        return 'plantwire_collector_messages_total{outcome="duplicate"} 1.0' in text and (
            'plantwire_collector_messages_total{outcome="stored"} 2.0' in text
        )

    await eventually(all_handled, what="one duplicate and two stored batches")
    assert count(database_url, "SELECT count(*) FROM readings") == 4
    assert count(database_url, "SELECT count(*) FROM batches") == 2
    status, body = await get_json(
        f"{collector}/api/v1/readings", tag="press/temp", **{"from": "2026-01-01T00:00:00Z"}
    )
    assert status == 200
    assert [r["value"] for r in body["readings"]] == [1.0, 2.0, 3.0, 4.0]


async def test_api_answers_bad_requests_with_problem_details(
    collector: str, publisher: MqttClient, topic_prefix: str
) -> None:
    await publisher.publish(
        f"{topic_prefix}/v1/a1/batch", batch("a1", 1, [1.0, 2.0, 3.0]), timeout=5
    )
    await publisher.publish(
        f"{topic_prefix}/v1/a2/batch", batch("a2", 1, [5.0], "press"), timeout=5
    )
    await publisher.publish(f"{topic_prefix}/v1/a2/batch", batch("a2", 2, [6.0], "oven"), timeout=5)
    since = {"from": "2026-01-01T00:00:00Z"}

    async def stored() -> bool:
        # Each agent's readings: two writes may commit in either order (and a tag is known
        # before its readings are).
        asked = [{"tag": "oven/temp"}, {"tag": "press/temp", "agent": "a1"}]
        found = [await get_json(f"{collector}/api/v1/readings", **q, **since) for q in asked]
        return all(status == 200 and body["count"] > 0 for status, body in found)

    await eventually(stored, what="batches of both agents")
    cases = [
        ({}, 400, "tag"),
        ({"tag": "no-slash"}, 400, "tag"),
        ({"tag": "press/temp", "agent": "a9"}, 404, "tag"),
        ({"tag": "ghost/temp"}, 404, "tag"),
        ({"tag": "press/temp"}, 400, "agent"),
        ({"tag": "oven/temp", "from": "yesterday"}, 400, "from"),
        ({"tag": "oven/temp", "to": "2026-01-01T00:00:00"}, 400, "to"),
        (
            {"tag": "oven/temp", "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            400,
            "from",
        ),
        ({"tag": "oven/temp", "limit": "0"}, 400, "limit"),
        ({"tag": "oven/temp", "limit": "many"}, 400, "limit"),
    ]
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for params, status, name in cases:
            async with session.get(f"{collector}/api/v1/readings", params=params) as response:
                assert response.status == status, params
                assert response.content_type == "application/problem+json"
                body = await response.json(content_type=None)
                assert body["status"] == status
                assert body["invalid_params"][0]["name"] == name, params
        async with session.get(f"{collector}/api/v1/nothing-here") as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"

    status, body = await get_json(
        f"{collector}/api/v1/readings", tag="press/temp", agent="a1", limit="2", **since
    )
    assert status == 200
    assert (body["count"], body["truncated"], body["data_type"]) == (2, True, "float64")
    assert body["readings"][0] == {
        "ts": "2026-09-21T14:13:20.001000Z",
        "value": 1.0,
        "quality": "good",
    }
    # The next page continues the same range after the last reading shown, then ends.
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.get(f"{collector}{body['next']}") as response:
            page = await response.json()
        assert [r["value"] for r in page["readings"]] == [3.0]
        assert (page["truncated"], page["next"]) == (False, None)
        async with session.get(
            f"{collector}/api/v1/readings", params={"tag": "press/temp", "cursor": "bm9wZQ"}
        ) as response:
            assert response.status == 400
            assert (await response.json())["invalid_params"][0]["name"] == "cursor"


async def test_health_and_metrics(collector: str) -> None:
    status, body = await get_json(f"{collector}/healthz")
    assert status == 200
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "mqtt": "ok"},
        "tasks": {
            "agent-liveness": "running",
            "alerts": "running",
            "commands": "running",
            "consumer": "running",
            "deriver": "running",
            "equipment-status": "running",
            "event-hub": "running",
            "key-usage": "running",
            "maintenance": "running",
            "rollups": "running",
            "webhooks": "running",
        },
    }
    text = await metrics_text(collector)
    assert "plantwire_collector_mqtt_connected 1.0" in text


def test_migrate_command_is_idempotent(
    postgres_fresh_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    versions = [migration.version for migration in available_migrations()]
    assert versions == list(range(1, len(versions) + 1)), "numbered 1, 2, ... without a gap"
    assert collector_main(["migrate", "--database-url", postgres_fresh_url]) == 0
    assert f"applied migrations: {versions}" in capsys.readouterr().out
    assert collector_main(["migrate", "--database-url", postgres_fresh_url]) == 0
    assert "up to date" in capsys.readouterr().out
    assert count(postgres_fresh_url, "SELECT count(*) FROM schema_migrations") == len(versions)


def test_migrate_needs_a_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PLANTWIRE_DATABASE_URL", raising=False)
    assert collector_main(["migrate"]) == 2
    assert "PLANTWIRE_DATABASE_URL" in capsys.readouterr().err
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2"
    assert collector_main(["migrate", "--database-url", url]) == 1
    assert "migration failed" in capsys.readouterr().err


def test_collector_stops_with_a_clear_error_when_the_database_is_unreachable(
    tmp_path: Path, mosquitto: MosquittoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(
        f"database: {{url: 'postgresql://postgres@127.0.0.1:{free_port()}/x', "
        "connect_timeout: 1s}\n"
        f"mqtt: {{url: '{mosquitto.url}'}}\n"
        f"http: {{port: {free_port()}}}\n"
    )
    assert collector_main(["run", "--config", str(path)]) == 1
    assert "database.url: no connection to PostgreSQL" in capsys.readouterr().err
    path.write_text("database: {}\n")
    assert collector_main(["run", "--config", str(path)]) == 2
    assert "database.url: required key is missing" in capsys.readouterr().err


async def test_retention_drops_whole_old_partitions_and_forgets_old_batch_ids(
    database_url: str,
) -> None:
    from datetime import UTC, datetime, timedelta

    from collector.partitions import (
        day_of,
        drop_expired_partitions,
        ensure_partitions,
        forget_old_batches,
    )

    today = datetime.now(UTC).date()
    old = today - timedelta(days=40)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await ensure_partitions(conn, today, 2)
        await ensure_partitions(conn, old, 0)  # an old day, created back then
        await conn.execute(
            "INSERT INTO agents (agent_id) VALUES ('a1');"
            "INSERT INTO tags (agent_id, device, name, data_type) VALUES ('a1', 'd', 't', 'int32');"
            "INSERT INTO batches (agent_id, epoch, batch_id, last_seq, readings, received_at)"
            " VALUES ('a1', 1, 1, 1, 1, now() - interval '40 days'), ('a1', 1, 2, 2, 1, now())"
        )
        await conn.execute(
            "INSERT INTO readings (tag_id, ts, value, quality, seq) SELECT tag_id, %s, 1, 0, 1"
            " FROM tags UNION ALL SELECT tag_id, %s, 2, 0, 2 FROM tags",
            (datetime(old.year, old.month, old.day, 12, tzinfo=UTC), datetime.now(UTC)),
        )
        dropped = await drop_expired_partitions(conn, today, retention_days=30)
        assert sorted(day_of(name) for name in dropped) == [old - timedelta(days=1), old]
        assert await forget_old_batches(conn, ledger_days=30) == 1
        cursor = await conn.execute("SELECT seq FROM readings")
        assert await cursor.fetchall() == [(2,)], "recent readings stay"
    assert day_of("readings_default") is None
    assert day_of("readings_p2026x101") is None


def state(status: str = "online", **extra: object) -> bytes:
    document = {
        "v": 1,
        "status": status,
        "version": "0.1.0",
        "config_hash": "abc",
        "devices": ["press"],
        "epoch": 42,
        **extra,
    }
    return json.dumps(document).encode()


async def test_bad_status_messages_are_quarantined_and_ingest_never_stops(
    collector: str, publisher: MqttClient, database_url: str, topic_prefix: str
) -> None:
    bad = {
        "state": [b"{not json", b"[]", state(status="exploded"), state(junk=1), b"\xff\xfe"],
        "heartbeat": [b"", b"null", json.dumps({"v": 1, "ts": "soon"}).encode()],
    }
    huge = state(devices=["d" * 100] * 1000)
    sent = 0
    for kind, payloads in bad.items():
        for payload in payloads:
            await publisher.publish(f"{topic_prefix}/v1/a1/{kind}", payload, timeout=5)
            sent += 1
    await publisher.publish(f"{topic_prefix}/v1/a1/state", huge, timeout=5)
    await publisher.publish(f"{topic_prefix}/v1/a1/state", state(), timeout=5)
    # A database refusal (PostgreSQL's jsonb has no NUL) is quarantined too, not retried forever.
    await publisher.publish(f"{topic_prefix}/v1/a2/state", state(version="\u0000"), timeout=5)
    await publisher.publish(f"{topic_prefix}/v1/a1/batch", batch("a1", 1, [1.0, 2.0]), timeout=5)

    async def settled() -> bool:
        return await stored_count(database_url) == 2

    await eventually(settled, what="the batch after the bad status messages")
    reasons = dict(
        row
        for row in psycopg.connect(database_url)
        .execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
        .fetchall()
    )
    assert reasons == {"state": 5, "heartbeat": 3, "too_large": 1, "store": 1}
    status, body = await get_json(f"{collector}/api/v1/agents/a1")
    assert status == 200
    assert body["status"] == "online", "the good birth after the garbage is recorded"
    status, health = await get_json(f"{collector}/healthz")
    assert status == 200, health
    text = await metrics_text(collector)
    assert 'plantwire_collector_dead_letters_total{reason="state"} 5.0' in text
    assert 'plantwire_collector_dead_letters_total{reason="heartbeat"} 3.0' in text


async def test_a_crashed_consumer_is_restarted_counted_and_reported(
    config: CollectorConfig,
    publisher: MqttClient,
    database_url: str,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = ReadingStore.write
    crashes = 0

    async def crash_once(self: ReadingStore, batches: Sequence[Batch]) -> WriteOutcome:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("a bug in the write path")
        return await original(self, batches)

    monkeypatch.setattr(ReadingStore, "write", crash_once)
    topic = f"{topic_prefix}/v1/a1/batch"
    async with running_collector(config) as base:
        await publisher.publish(topic, batch("a1", 1, [1.0]), timeout=5)

        async def failing() -> bool:
            status, body = await get_json(f"{base}/healthz")
            return status == 503 and body["tasks"]["consumer"] == "failing"

        await eventually(failing, timeout=10, what="/healthz to report the crashed consumer")
        _, body = await get_json(f"{base}/healthz")
        assert body["checks"]["task consumer"] == "failing: RuntimeError: a bug in the write path"

        # The agent sends the unacknowledged batch again; the restarted consumer stores it.
        async def stored() -> bool:
            await publisher.publish(topic, batch("a1", 1, [1.0]), timeout=5)
            return await stored_count(database_url) == 1

        await eventually(stored, timeout=30, what="the resent batch stored after the restart")
        await publisher.publish(topic, batch("a1", 2, [2.0]), timeout=5)

        async def next_one() -> bool:
            return await stored_count(database_url) == 2

        await eventually(next_one, what="ingest to go on")
        text = await metrics_text(base)
        assert 'plantwire_collector_task_restarts_total{task="consumer"} 1.0' in text


async def test_tags_are_listed_a_page_at_a_time(
    collector: str, publisher: MqttClient, topic_prefix: str
) -> None:
    for number, device in enumerate(("press", "oven", "lathe"), start=1):
        await publisher.publish(
            f"{topic_prefix}/v1/a1/batch", batch("a1", number, [1.0], device), timeout=5
        )

    async def all_three() -> bool:
        status, body = await get_json(f"{collector}/api/v1/tags", agent="a1")
        return status == 200 and len(body["items"]) == 3

    await eventually(all_three, what="three tags")
    status, first = await get_json(f"{collector}/api/v1/tags", agent="a1", limit="2")
    assert status == 200
    assert len(first["items"]) == 2
    assert first["items"][0]["data_type"] == "float64"
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(f"{collector}{first['next']}") as response,
    ):
        second = await response.json()
    assert len(second["items"]) == 1
    assert second["next"] is None
    pages = [item["tag"] for item in first["items"] + second["items"]]
    assert sorted(pages) == ["lathe/temp", "oven/temp", "press/temp"]
    status, only = await get_json(f"{collector}/api/v1/tags", device="oven")
    assert [item["tag"] for item in only["items"]] == ["oven/temp"]
