"""The reading store's edges against real PostgreSQL: empty batches and bounded caches."""

import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from collector import store as store_module
from collector.batches import Batch
from collector.config import IngestSettings
from collector.consumer import batch_decoder
from collector.pools import new_pool
from collector.store import ReadingStore, WriteOutcome
from shared.readings import DataType, Reading
from shared.wire import Topics, encode_batch

pytestmark = pytest.mark.integration
TOPICS = Topics()
DECODER = batch_decoder(IngestSettings())
NOW_US = time.time_ns() // 1000
YEAR_1601_US = -11_644_473_600_000_000


def batch(batch_id: int, tag: str, ts_us: int = NOW_US) -> Batch:
    readings = [Reading("press", tag, DataType.FLOAT64, ts_us, float(batch_id))]
    payload = encode_batch("press-1", 1, [batch_id], readings)
    return DECODER.decode(payload, "press-1", TOPICS.batch("press-1"))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ReadingStore]:
    pool = new_pool(database_url, 2)
    await pool.open(wait=True, timeout=10)
    try:
        yield ReadingStore(pool)
    finally:
        await pool.close()


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


async def test_a_batch_whose_every_reading_is_refused_is_recorded_with_nothing_to_copy(
    store: ReadingStore, database_url: str
) -> None:
    empty = batch(1, "speed", YEAR_1601_US)
    assert len(empty) == 0
    assert await store.write([empty]) == WriteOutcome(1, 0, 0, {"timestamp": 1})
    assert rows(database_url, "SELECT agent_id, batch_id, readings FROM batches") == [
        ("press-1", 1, 0)
    ]
    assert rows(database_url, "SELECT count(*) FROM readings") == [(0,)]
    assert rows(database_url, "SELECT reason FROM dead_readings") == [("timestamp",)]
    assert await store.write([empty]) == WriteOutcome(0, 1, 0, {}), "sent again: a duplicate"


async def test_tag_ids_stay_right_when_the_dictionary_cache_forgets_the_oldest(
    store: ReadingStore, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_ID_CACHE_SIZE", 1)
    for batch_id, tag in [(1, "speed"), (2, "temp"), (3, "speed"), (4, "temp")]:
        assert await store.write([batch(batch_id, tag)]) == WriteOutcome(1, 0, 1, {})
    assert len(store._ids) == 1, "the cache holds at most _ID_CACHE_SIZE dictionaries"
    stored = rows(
        database_url,
        "SELECT r.seq, t.name, r.value FROM readings r JOIN tags t USING (tag_id) ORDER BY r.seq",
    )
    assert stored == [(1, "speed", 1.0), (2, "temp", 2.0), (3, "speed", 3.0), (4, "temp", 4.0)]


async def test_the_tag_lookup_cache_starts_over_when_full(
    store: ReadingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "TAG_CACHE_MAX", 1)
    await store.write([batch(1, "speed"), batch(2, "temp")])
    speed = await store.find_tags("press", "speed", None)
    temp = await store.find_tags("press", "temp", "press-1")
    assert [(t.name, t.data_type) for t in speed] == [("speed", DataType.FLOAT64)]
    assert [(t.name, t.agent_id) for t in temp] == [("temp", "press-1")]
    assert list(store._found) == [("press", "temp", "press-1")], "the first was let go"
    assert await store.find_tags("press", "speed", None) == speed


async def test_with_derivation_off_writes_log_nothing_for_the_deriver(database_url: str) -> None:
    pool = new_pool(database_url, 2)
    await pool.open(wait=True, timeout=10)
    try:
        assert await ReadingStore(pool, derive=False).write([batch(1, "speed")]) == WriteOutcome(
            1, 0, 1, {}
        )
        assert await ReadingStore(pool).write([batch(2, "speed")]) == WriteOutcome(1, 0, 1, {})
    finally:
        await pool.close()
    assert rows(database_url, "SELECT count(*) FROM readings") == [(2,)]
    assert rows(database_url, "SELECT count(*) FROM derive_log") == [(1,)], "only the second"


async def test_each_batch_logs_its_own_tags_and_span(
    store: ReadingStore, database_url: str
) -> None:
    hour_us = 3_600_000_000
    backlog = batch(1, "speed", NOW_US - 8 * hour_us)  # an agent's backlog, 8 hours old
    live = batch(2, "temp", NOW_US)
    assert await store.write([backlog, live]) == WriteOutcome(2, 0, 2, {})
    logged = rows(
        database_url,
        "SELECT t.name, extract(epoch FROM l.hi - l.lo), l.lo < now() - interval '7 hours'"
        " FROM derive_log l JOIN tags t ON t.tag_id = ANY(l.tag_ids) ORDER BY l.lo",
    )
    assert logged == [("speed", 0, True), ("temp", 0, False)]
