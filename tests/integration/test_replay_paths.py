"""Replaying a dead letter that is gone, or that another replay took first."""

import psycopg
import pytest

from collector.agents import AgentRegistry
from collector.batches import Batch
from collector.config import IngestSettings
from collector.consumer import batch_decoder
from collector.pools import Pool
from collector.replay import Replayer, ReplayOutcome
from collector.store import ReadingStore, TagIds
from shared.readings import DataType, Reading
from shared.wire import Topics, encode_batch

pytestmark = pytest.mark.integration
SETTINGS = IngestSettings()
TOPICS = Topics()


@pytest.fixture
def pool(db_pool: Pool) -> Pool:
    return db_pool


def replayer(pool: Pool, store: ReadingStore) -> Replayer:
    return Replayer(store, AgentRegistry(pool), SETTINGS, TOPICS, batch_decoder(SETTINGS))


def quarantined_batch(database_url: str) -> int:
    """A whole batch kept as a dead letter (say, the database refused it); its id."""
    readings = [Reading("press", "speed", DataType.FLOAT64, 1_790_000_000_000_000, 2.5)]
    payload = encode_batch("press-1", 1, [1], readings)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO dead_letters (topic, payload, error, agent_id, kind, reason, epoch,"
            " batch_id, readings) VALUES (%s, %s, 'refused', 'press-1', 'batch', 'store', 1, 1, 1)"
            " RETURNING id",
            (TOPICS.batch("press-1"), payload),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_dead_letter_that_does_not_exist_is_not_found(pool: Pool) -> None:
    outcome = await replayer(pool, ReadingStore(pool)).replay(123_456)
    assert outcome == ReplayOutcome(123_456, "not_found")


@pytest.mark.parametrize(
    "meanwhile",
    [
        "UPDATE dead_letters SET replayed_at = now() WHERE id = %s",  # another replay won
        "DELETE FROM dead_letters WHERE id = %s",  # purged while this one prepared
    ],
    ids=["replayed", "purged"],
)
async def test_a_batch_another_replay_took_first_is_not_stored_twice(
    pool: Pool, database_url: str, meanwhile: str
) -> None:
    dead_letter_id = quarantined_batch(database_url)

    class RacedStore(ReadingStore):
        """Someone else acts on the dead letter while this replay learns its tags."""

        async def prepare(self, batches: list[Batch]) -> TagIds:
            ids = await super().prepare(batches)
            with psycopg.connect(database_url, autocommit=True) as other:
                other.execute(meanwhile, (dead_letter_id,))
            return ids

    outcome = await replayer(pool, RacedStore(pool)).replay(dead_letter_id)
    assert outcome == ReplayOutcome(dead_letter_id, "already_replayed")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM batches").fetchone() == (0,)


async def test_a_message_of_no_ingested_kind_still_fails_and_says_why(
    pool: Pool, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO dead_letters (topic, payload, error, agent_id, kind, reason)"
            " VALUES ('plantwire/v1/press-1/command', 'x', 'unexpected', 'press-1', 'unknown',"
            " 'topic') RETURNING id"
        ).fetchone()
    assert row is not None
    outcome = await replayer(pool, ReadingStore(pool)).replay(row[0])
    error = "no 'unknown' messages are ingested"
    assert outcome == ReplayOutcome(row[0], "still_failing", error=error)
    with psycopg.connect(database_url) as conn:
        kept = conn.execute(
            "SELECT replayed_at, replay_error FROM dead_letters WHERE id = %s", (row[0],)
        ).fetchone()
    assert kept == (None, error), "kept, with the reason the replay failed"
