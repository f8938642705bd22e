"""Replaying dead letters once their cause is fixed: idempotent through the batch ledger.

A whole batch that was quarantined is ingested as if it arrived now (the ledger stores it at
most once, also if its agent sent it again meanwhile); the refused readings of a stored batch
are checked again and those that now pass are stored, each once. Status messages are recorded
again. Whatever still fails stays a dead letter, with the new error in `replay_error`.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from collector.agents import AgentRegistry
from collector.batches import Batch, BatchDecoder, UnknownDictionary, check_size
from collector.config import IngestSettings
from collector.store import ReadingStore, TagIds
from shared.errors import WireError
from shared.wire import Topics

ReplayStatus = Literal["replayed", "partly", "still_failing", "already_replayed", "not_found"]


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What replaying one dead letter did."""

    dead_letter_id: int
    status: ReplayStatus
    readings_stored: int = 0
    readings_still_refused: int = 0
    error: str | None = None


class Replayer:
    """Replays dead letters through the collector's own decoding and storage."""

    def __init__(
        self,
        store: ReadingStore,
        registry: AgentRegistry,
        settings: IngestSettings,
        topics: Topics,
        decoder: BatchDecoder,
    ) -> None:
        self._store = store
        self._registry = registry
        self._settings = settings
        self._topics = topics
        self._decoder = decoder

    async def replay(self, dead_letter_id: int) -> ReplayOutcome:
        """Replay one dead letter."""
        async with self._store.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT topic, payload, kind, replayed_at FROM dead_letters WHERE id = %s",
                (dead_letter_id,),
            )
            row = await cursor.fetchone()
        if row is None:
            return ReplayOutcome(dead_letter_id, "not_found")
        topic, payload, kind, replayed_at = row[0], bytes(row[1]), row[2], row[3]
        if replayed_at is not None:
            return ReplayOutcome(dead_letter_id, "already_replayed")
        try:
            agent = self._topics.agent_of(topic)
            if kind == "batch":
                return await self._batch(dead_letter_id, agent, topic, payload)
            if kind in ("state", "heartbeat"):
                check_size(payload, self._settings.max_status_bytes)
                await self._registry(agent, kind, payload)
                await self._finish(dead_letter_id, None)
                return ReplayOutcome(dead_letter_id, "replayed")
            raise WireError(f"no {kind!r} messages are ingested", reason="topic")
        except WireError as exc:
            await self._finish(dead_letter_id, str(exc), done=False)
            return ReplayOutcome(dead_letter_id, "still_failing", error=str(exc))

    async def _batch(
        self, dead_letter_id: int, agent: str, topic: str, payload: bytes
    ) -> ReplayOutcome:
        check_size(payload, self._settings.max_payload_bytes)
        try:
            whole, bad, _ = self._decoder.decode_all(payload, agent, topic)
        except UnknownDictionary as exc:
            # A version 3 batch that only named its dictionary: a collector kept it.
            if not await self._decoder.resolve(exc, self._store.load_dictionary):
                raise
            whole, bad, _ = self._decoder.decode_all(payload, agent, topic)
        batch = self._decoder.decode(payload, agent, topic)
        ids = await self._store.prepare([batch])
        async with self._store.pool.connection() as conn, conn.transaction():
            locked = await conn.execute(
                "SELECT replayed_at FROM dead_letters WHERE id = %s FOR UPDATE", (dead_letter_id,)
            )
            row = await locked.fetchone()
            if row is None or row[0] is not None:
                return ReplayOutcome(dead_letter_id, "already_replayed")
            ledger = await conn.execute(
                "SELECT 1 FROM batches WHERE agent_id = %s AND epoch = %s AND batch_id = %s",
                (batch.agent, batch.epoch, batch.batch_id),
            )
            if await ledger.fetchone() is None:
                fresh = await self._store.write_in(conn, [batch], ids)
                stored = sum(len(b) for b in fresh)
            else:
                stored = await self._refused_again(conn, dead_letter_id, whole, bad, ids)
            left = await conn.execute(
                "SELECT count(*) FROM dead_readings WHERE dead_letter_id = %s", (dead_letter_id,)
            )
            remaining = int((await left.fetchone() or (0,))[0])
            if remaining:
                await conn.execute(
                    "UPDATE dead_letters SET readings = %s, replay_error = %s WHERE id = %s",
                    (remaining, f"{remaining} readings still refused", dead_letter_id),
                )
                return ReplayOutcome(dead_letter_id, "partly", stored, remaining)
            await conn.execute(
                "UPDATE dead_letters SET replayed_at = now(), replay_error = NULL WHERE id = %s",
                (dead_letter_id,),
            )
        return ReplayOutcome(dead_letter_id, "replayed", stored)

    async def _refused_again(
        self,
        conn: AsyncConnection[TupleRow],
        dead_letter_id: int,
        whole: Batch,
        bad: NDArray[np.bool_],
        ids: TagIds,
    ) -> int:
        """Store the refused readings of a stored batch that pass now; return how many."""
        cursor = await conn.execute(
            "SELECT idx FROM dead_readings WHERE dead_letter_id = %s", (dead_letter_id,)
        )
        refused = np.zeros(len(whole), np.bool_)
        refused[[int(r[0]) for r in await cursor.fetchall()]] = True
        passing = refused & ~bad
        if not passing.any():
            return 0
        again = whole.select(passing, None)
        await self._store.copy(conn, [again], ids)
        await conn.execute(
            "DELETE FROM dead_readings WHERE dead_letter_id = %s AND idx = ANY(%s)",
            (dead_letter_id, np.flatnonzero(passing).tolist()),
        )
        return len(again)

    async def _finish(self, dead_letter_id: int, error: str | None, *, done: bool = True) -> None:
        async with self._store.pool.connection() as conn:
            await conn.execute(
                "UPDATE dead_letters SET replayed_at = CASE WHEN %s THEN now() END,"
                " replay_error = %s WHERE id = %s",
                (done, error, dead_letter_id),
            )
