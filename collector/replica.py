"""The API's reads: on a streaming replica while it answers, on the primary otherwise.

A replica that refuses or drops connections is left alone for a while and reads go to the
primary, counted; it is tried again by itself afterwards.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

from collector.metrics import CollectorMetrics
from collector.pools import Pool
from shared.cancellation import raise_if_cancelled
from shared.invariants import required

log = logging.getLogger(__name__)
T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

REPLICA_WAIT_S = 1.0
"""Longest wait for a replica connection before reading from the primary instead."""
REPLICA_QUERY_S = 10.0
"""Longest a read may take on the replica before it is read from the primary instead."""
REPLICA_RETRY_S = 5.0
"""After the replica failed, read from the primary this long before trying it again."""
LAG_CHECK_S = 5.0
"""How often the replica lag gauge is refreshed."""

LAG_QUERY = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
    " THEN 0 ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
)
"""On a replica: whether it is one, and seconds its replay is behind (0 when caught up)."""


class ReadPools:
    """Runs read-only work on the replica if there is one and it answers, else the primary."""

    def __init__(
        self,
        primary: Pool,
        replica: Pool | None = None,
        metrics: CollectorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self._metrics = metrics
        self._clock = clock
        self._down_until = 0.0

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """`work` on a connection to the replica, or to the primary if the replica fails."""
        if self.replica is not None and self._down_until <= self._clock():
            try:
                async with (
                    self.replica.connection(timeout=REPLICA_WAIT_S) as conn,
                    asyncio.timeout(REPLICA_QUERY_S),
                ):
                    result = await work(conn)
            except (PoolTimeout, psycopg.OperationalError, TimeoutError) as exc:
                raise_if_cancelled(exc)  # a cancelled query surfaces as QueryCanceled
                self._failed(exc)
            else:
                if self._down_until:
                    log.info("read replica answers again; API reads go to it")
                    self._down_until = 0.0
                return result
        async with self.primary.connection() as conn:
            return await work(conn)

    def _failed(self, exc: Exception) -> None:
        if not self._down_until:
            log.warning(
                "read replica failed (%s: %s); reading from the primary for %.0f s at a time",
                type(exc).__name__,
                exc,
                REPLICA_RETRY_S,
            )
        self._down_until = self._clock() + REPLICA_RETRY_S
        if self._metrics is not None:
            self._metrics.read_fallbacks.inc()

    async def watch_lag(self, every_s: float = LAG_CHECK_S) -> None:
        """Keep the replica lag gauge current, NaN while the replica fails; until cancelled."""
        metrics = required(self._metrics, "the collector's metrics")
        while True:
            try:
                async with asyncio.timeout(REPLICA_QUERY_S):
                    lag = await self.replica_lag()
            except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
                raise_if_cancelled(exc)
                lag = float("nan")
            metrics.replica_lag.set(float("nan") if lag is None else lag)
            await asyncio.sleep(every_s)

    async def replica_lag(self) -> float | None:
        """Seconds the replica's replay is behind the primary; None without a replica."""
        if self.replica is None:
            return None
        async with self.replica.connection(timeout=REPLICA_WAIT_S) as conn:
            row = await (await conn.execute(LAG_QUERY)).fetchone()
        if row is None or not row[0]:
            raise psycopg.OperationalError("database.read_url is not a replica in recovery")
        return float(row[1] or 0.0)
