"""Partition upkeep against real PostgreSQL: a name already taken, old readings in the default."""

import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import psycopg
import pytest

from collector.config import IngestSettings
from collector.consumer import batch_decoder
from collector.partitions import drop_expired_partitions, ensure_partition
from collector.pools import new_pool
from collector.store import ReadingStore, WriteOutcome
from shared.readings import DataType, Reading, datetime_to_us
from shared.wire import Topics, encode_batch

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        yield conn


async def test_a_table_that_already_has_the_partitions_name_is_left_alone(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
) -> None:
    await conn.execute("CREATE TABLE readings_p20300101 (LIKE readings)")
    assert await ensure_partition(conn, date(2030, 1, 1)) is False
    attached = await conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'readings_p20300101'::regclass"
    )
    assert await attached.fetchone() == (0,), "not made a partition behind its owner's back"


async def test_retention_deletes_old_readings_kept_in_the_default_partition(
    database_url: str,
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Years back, beyond the partition window: the store keeps it in readings_default.
    old = datetime_to_us(datetime(2020, 6, 1, tzinfo=UTC))
    payload = encode_batch("press-1", 1, [1], [Reading("press", "speed", DataType.INT32, old, 7)])
    old_batch = batch_decoder(IngestSettings()).decode(
        payload, "press-1", Topics().batch("press-1")
    )
    pool = new_pool(database_url, 1)
    await pool.open(wait=True, timeout=10)
    try:
        assert await ReadingStore(pool).write([old_batch]) == WriteOutcome(1, 0, 1, {})
    finally:
        await pool.close()
    kept = await conn.execute("SELECT count(*) FROM readings_default")
    assert await kept.fetchone() == (1,)
    with caplog.at_level(logging.INFO, logger="collector.partitions"):
        await drop_expired_partitions(conn, datetime.now(UTC).date(), 30)
    kept = await conn.execute("SELECT count(*) FROM readings_default")
    assert await kept.fetchone() == (0,)
    assert "deleted 1 readings older than 30 days from readings_default" in caplog.text
