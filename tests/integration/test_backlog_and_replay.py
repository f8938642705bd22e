"""Backlogs of any age land in their day's partition; dead letters replay once; tags keep types."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg_pool import AsyncConnectionPool

from collector.app import maintain
from collector.cli import main as collector_main
from collector.config import CollectorConfig, DatabaseSettings
from collector.partitions import ensure_partition
from shared.mqtt import MqttClient
from shared.readings import DataType, Reading, Value, datetime_to_us
from shared.wire import encode_batch
from tests.harness import collector_config, eventually, get_json, running_collector
from tests.servers import MosquittoServer

NOW = datetime.now(UTC)


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def batch(
    first_seq: int,
    moments: list[datetime],
    value: Value = 1.0,
    data_type: DataType = DataType.FLOAT64,
) -> bytes:
    readings = [
        Reading("press", "temp", data_type, datetime_to_us(moment), value) for moment in moments
    ]
    seqs = list(range(first_seq, first_seq + len(readings)))
    return encode_batch("a1", 7, seqs, readings)


def settings_of(url: str, **overrides: Any) -> DatabaseSettings:
    return DatabaseSettings.model_validate({"url": url, **overrides})


async def run_maintenance(url: str, **overrides: Any) -> None:
    async with AsyncConnectionPool(
        url, min_size=1, max_size=1, kwargs={"autocommit": True}
    ) as pool:
        await maintain(pool, settings_of(url, **overrides))


@pytest.fixture
def config(database_url: str, mosquitto: MosquittoServer, topic_prefix: str) -> CollectorConfig:
    return collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        max_payload_bytes=2048,
        oldest_timestamp=(NOW - timedelta(days=30)).isoformat(),
    )


def partitions_of(url: str) -> dict[str, int]:
    found = rows(url, "SELECT tableoid::regclass::text, count(*) FROM readings GROUP BY 1")
    return dict(found)


async def test_a_four_day_old_backlog_lands_in_its_days_partition_and_expires(
    config: CollectorConfig, publisher: MqttClient, database_url: str, topic_prefix: str
) -> None:
    four_days = NOW - timedelta(days=4)
    async with running_collector(config):
        await publisher.publish(
            f"{topic_prefix}/v1/a1/batch", batch(1, [four_days, NOW]), timeout=5
        )

        async def stored() -> bool:
            return sum((await asyncio.to_thread(partitions_of, database_url)).values()) == 2

        await eventually(stored, what="the backlog stored")
    day = four_days.date()
    assert partitions_of(database_url) == {
        f"readings_p{day:%Y%m%d}": 1,
        f"readings_p{NOW.date():%Y%m%d}": 1,
    }
    indexed = rows(
        database_url,
        "SELECT indexdef FROM pg_indexes WHERE tablename = %s",
        f"readings_p{day:%Y%m%d}",
    )
    assert len(indexed) == 1, "the attached partition has the (tag_id, ts) index"
    assert "(tag_id, ts)" in indexed[0][0]
    await run_maintenance(database_url, retention_days=3)
    assert partitions_of(database_url) == {f"readings_p{NOW.date():%Y%m%d}": 1}
    left = rows(database_url, "SELECT to_regclass(%s)", f"readings_p{day:%Y%m%d}")
    assert left == [(None,)], "the expired day's partition is dropped"


async def test_readings_beyond_the_window_wait_in_the_default_partition_until_it_covers_them(
    config: CollectorConfig, publisher: MqttClient, database_url: str, topic_prefix: str
) -> None:
    old = NOW - timedelta(days=20)
    config = config.model_copy(
        update={"database": config.database.model_copy(update={"partition_days_back": 10})}
    )
    async with running_collector(config):
        await publisher.publish(f"{topic_prefix}/v1/a1/batch", batch(1, [old, old]), timeout=5)

        async def stored() -> bool:
            return sum((await asyncio.to_thread(partitions_of, database_url)).values()) == 2

        await eventually(stored, what="the old readings stored")
    assert partitions_of(database_url) == {"readings_default": 2}
    await run_maintenance(database_url, partition_days_back=30)
    assert partitions_of(database_url) == {f"readings_p{old.date():%Y%m%d}": 2}
    await run_maintenance(database_url, partition_days_back=5, retention_days=40)
    assert sum(partitions_of(database_url).values()) == 2, "within retention: kept"
    await run_maintenance(database_url, retention_days=15)
    assert partitions_of(database_url) == {}


async def cli(args: list[str]) -> int:
    """Run plantwire-collector's main() as the shell would, off this test's event loop."""
    return await asyncio.to_thread(collector_main, args)


def write_config(path: Path, config: CollectorConfig, **ingest: Any) -> Path:
    document = {
        "database": {"url": config.database.url.get_secret_value()},
        "mqtt": {"url": config.mqtt.url, "topic_prefix": config.mqtt.topic_prefix},
        "ingest": ingest,
    }
    path.write_text(yaml.safe_dump(document))
    return path


async def test_dead_letters_replay_once_after_the_cause_is_fixed(
    config: CollectorConfig,
    publisher: MqttClient,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = f"{topic_prefix}/v1/a1/batch"
    too_large = batch(1, [NOW - timedelta(seconds=i) for i in range(100)])
    partly_old = batch(200, [NOW, NOW - timedelta(days=60), NOW - timedelta(days=61)])
    async with running_collector(config):
        await publisher.publish(topic, too_large, timeout=5)
        await publisher.publish(topic, partly_old, timeout=5)
        await publisher.publish(f"{topic_prefix}/v1/a1/heartbeat", b"{not json", timeout=5)

        async def quarantined() -> bool:
            found = await asyncio.to_thread(rows, database_url, "SELECT id FROM dead_letters")
            return len(found) == 3

        await eventually(quarantined, what="three dead letters")
    assert rows(database_url, "SELECT count(*) FROM readings") == [(1,)]
    letters = dict(rows(database_url, "SELECT reason, id FROM dead_letters"))
    assert set(letters) == {"too_large", "timestamp", "heartbeat"}

    # The cause stays: replay changes nothing and says why.
    unchanged = write_config(
        tmp_path / "same.yaml",
        config,
        max_payload_bytes=2048,
        oldest_timestamp=config.ingest.oldest_timestamp.isoformat(),
    )
    assert await cli(["dead-letters", "replay", "--config", str(unchanged), "--all"]) == 1
    out = capsys.readouterr().out
    assert f"{letters['too_large']}: still failing: payload of" in out
    assert f"{letters['timestamp']}: partly, 2 still refused" in out
    assert rows(database_url, "SELECT count(*) FROM readings") == [(1,)]

    # The cause fixed: everything is stored, each reading once, however often replayed.
    fixed = write_config(
        tmp_path / "fixed.yaml",
        config,
        max_payload_bytes=1_000_000,
        oldest_timestamp=(NOW - timedelta(days=100)).isoformat(),
    )
    for dead_letter in ("too_large", "timestamp"):
        args = ["dead-letters", "replay", "--config", str(fixed), "--id", str(letters[dead_letter])]
        assert await cli(args) == 0
    out = capsys.readouterr().out
    assert f"{letters['too_large']}: replayed, 100 readings stored" in out
    assert f"{letters['timestamp']}: replayed, 2 readings stored" in out
    assert await cli(["dead-letters", "replay", "--config", str(fixed), "--all"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{letters['heartbeat']}: still failing: invalid heartbeat")
    assert len(out.splitlines()) == 1, "--all takes only those not yet replayed"
    args = ["dead-letters", "replay", "--config", str(fixed), "--id", str(letters["too_large"])]
    assert await cli(args) == 0
    assert "already replayed" in capsys.readouterr().out
    counted = rows(database_url, "SELECT count(*), count(DISTINCT seq) FROM readings")
    assert counted == [(103, 103)]
    assert rows(database_url, "SELECT count(*) FROM dead_readings") == [(0,)]
    replayed = rows(database_url, "SELECT reason FROM dead_letters WHERE replayed_at IS NOT NULL")
    assert sorted(r[0] for r in replayed) == ["timestamp", "too_large"]


async def test_a_tag_whose_type_changes_keeps_the_type_of_each_reading(
    config: CollectorConfig, publisher: MqttClient, database_url: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}/v1/a1/batch"
    moments = [NOW - timedelta(seconds=30 - i) for i in range(4)]
    async with running_collector(config) as base:
        await publisher.publish(topic, batch(1, moments[:1], "idle", DataType.STRING), timeout=5)
        await publisher.publish(topic, batch(2, moments[1:2], 3, DataType.UINT16), timeout=5)
        await publisher.publish(topic, batch(3, moments[2:3], 2.5, DataType.FLOAT64), timeout=5)
        await publisher.publish(topic, batch(4, moments[3:], "run", DataType.STRING), timeout=5)

        async def stored() -> bool:
            found = await asyncio.to_thread(rows, database_url, "SELECT count(*) FROM readings")
            return found == [(4,)]

        await eventually(stored, what="four readings of three types")
        start = (NOW - timedelta(minutes=1)).isoformat()
        status, body = await get_json(
            f"{base}/api/v1/readings", tag="press/temp", **{"from": start}
        )
        assert status == 200, body
        assert body["data_type"] == "string", "the type it has now"
        assert [(r["value"], r["data_type"]) for r in body["readings"]] == [
            ("idle", "string"),
            (3, "uint16"),
            (2.5, "float64"),
            ("run", "string"),
        ]
        status, body = await get_json(
            f"{base}/api/v1/readings",
            tag="press/temp",
            **{"from": start, "to": moments[2].isoformat()},
        )
        assert [(r["value"], r["data_type"]) for r in body["readings"]] == [
            ("idle", "string"),
            (3, "uint16"),
        ]
    assert rows(database_url, "SELECT count(*) FROM tags") == [(3,)]


async def test_collectors_racing_to_create_a_days_partition_all_succeed(database_url: str) -> None:
    day = (NOW - timedelta(days=50)).date()
    moment = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO readings (tag_id, ts, value, quality, seq)"
            " SELECT 1, %s, g, 0, g FROM generate_series(1, 1000) AS g",
            (moment,),
        )
    assert partitions_of(database_url) == {"readings_default": 1000}
    connections = [
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) for _ in range(6)
    ]
    try:
        created = await asyncio.gather(*(ensure_partition(conn, day) for conn in connections))
    finally:
        for conn in connections:
            await conn.close()
    assert created.count(True) == 1, created
    assert partitions_of(database_url) == {f"readings_p{day:%Y%m%d}": 1000}
