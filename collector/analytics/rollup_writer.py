"""Rolls up held readings: those of ended minutes, summarised per tag and minute, merged in.

One transaction copies the summaries of buckets that have no row yet straight into the
rollups, merges the others into theirs (collector/analytics/rollup_merge.py) or redoes what
they overlap from the stored readings, and deletes the claims of the batches they came from.
So a batch's readings reach the rollups exactly once: here, or, if this collector stops
first, through its claim, which the deriver rolls up from the stored readings. The
transaction holds the deriver's lock, so it never merges into rows a deriver pass is redoing.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import cast

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.analytics.deriver import LOCK_KEY, WRITER_KEY, RollupRefresh
from collector.analytics.held_readings import HeldReadings, Taken
from collector.analytics.minute_summaries import Columns, Summaries, coarser, summarize
from collector.analytics.rollup_merge import (
    CREATE_NEW,
    HOURS,
    MINUTES,
    NEW_HOURS,
    NEW_MINUTES,
    SUMMARY_TABLE_COLUMNS,
    merge_summaries,
    stored,
)
from collector.analytics.rollups import refresh_hours, refresh_rollups
from collector.analytics.timespans import HOUR, floor_to
from collector.copy_rows import HEADER, TRAILER, binary_rows
from shared.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

_COPY = "COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
_UNCLAIM = """
DELETE FROM rollup_claims c USING unnest(%s::text[], %s::int8[], %s::int8[]) AS k(a, e, b)
WHERE (c.agent_id, c.epoch, c.batch_id) = (k.a, k.e, k.b)
"""
# Writers of other agents' batches run side by side; an agent's writers take turns (its tag
# versions are its own). In the order of the keys, so two writers never wait in a ring;
# an earlier release's writer takes WRITER_KEY exclusively and keeps clear of all of them.
_AGENT_LOCKS = """
SELECT count(pg_advisory_xact_lock(%s::int4, h))
FROM (SELECT DISTINCT hashtext(a) AS h FROM unnest(%s::text[]) AS a ORDER BY h) AS agents
"""
QUIET_S = 0.1
"""No batch for this long, and none being written: the batches have paused (a backlog's burst
has ended). Shorter while batches come faster (held_readings.HeldReadings.quiet)."""
PART_READINGS = 400_000
"""Readings summarised at a time (whole agents' at a time): the next part is summarised while
the database stores one (a backlog's burst ends with millions held)."""
LANES = 2
"""Transactions a large hold is written in side by side (on connections of their own): the
database works on two agents' summaries at once."""
FINAL_WRITE_S = 5.0
"""Longest a stopping collector spends writing what it holds (the rest stays claimed)."""


def _numbers(
    summaries: Summaries, rows: NDArray[np.bool_] | None, column: str
) -> NDArray[np.generic] | None:
    """A number field's column at `rows`, or None (NULL) for rows without numbers."""
    return None if rows is None else cast(NDArray[np.generic], getattr(summaries, column)[rows])


def summary_rows(summaries: Summaries) -> bytes:
    """The summaries as binary COPY rows in SUMMARY_TABLE_COLUMNS order (no header or trailer)."""
    out = []
    for has_numbers in (True, False):
        rows = (summaries.numbers > 0) == has_numbers
        count = int(rows.sum())
        if not count:
            continue
        number = partial(_numbers, summaries, rows if has_numbers else None)
        out.append(
            binary_rows(
                [
                    ("int4", summaries.tag[rows]),
                    ("timestamptz", summaries.bucket[rows]),
                    ("int4", summaries.count[rows]),
                    ("int4", summaries.good[rows]),
                    ("int4", summaries.numbers[rows]),
                    ("timestamptz", number("first_ts")),
                    ("float8", number("first_value")),
                    ("timestamptz", number("last_ts")),
                    ("float8", number("last_value")),
                    ("float8", number("total")),
                    ("float8", number("low")),
                    ("float8", number("high")),
                    ("float8", summaries.step_area[rows]),
                    ("float8", summaries.linear_area[rows]),
                    ("float8", summaries.increase[rows]),
                    ("timestamptz", number("low_ts")),
                    ("timestamptz", number("high_ts")),
                    ("timestamptz", summaries.span_lo[rows]),
                    ("timestamptz", summaries.span_hi[rows]),
                ],
                count,
            )
        )
    return b"".join(out)


def _now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1e6)


class RollupWriter:
    """Rolls up the held readings of ended minutes every `interval` seconds (runs supervised)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]],
        held: HeldReadings,
        interval: float,
        now_us: Callable[[], int] = _now_us,
        refresh: RollupRefresh = refresh_rollups,
        paused: Callable[[], None] = lambda: None,
        part_readings: int = PART_READINGS,
        lanes: int = LANES,
    ) -> None:
        """`refresh` redoes minutes (and their hours) from the stored readings; `paused` is
        told when the batches have paused and held readings are due to be rolled up."""
        self._pool = pool
        self._held = held
        self._interval = interval
        self._now_us = now_us
        self._refresh = refresh
        self._paused = paused
        self._part_readings = part_readings
        self._lanes = lanes

    async def run(self) -> None:
        """Roll up what is due every `interval` while batches keep coming, and as soon as they
        pause (a backlog's burst has ended)."""
        failing = False
        idle = False
        last = asyncio.get_running_loop().time()
        while True:
            quiet = await self._next(last, idle)
            last = asyncio.get_running_loop().time()
            try:
                written = await self.write(pausing=quiet)
            except psycopg.OperationalError as exc:
                raise_if_cancelled(exc)
                if not failing:
                    log.error("cannot roll up held readings: %s; trying again", exc)
                failing = idle = True
                continue
            failing = False
            idle = not written

    async def flush(self) -> None:
        """Roll up everything held, within FINAL_WRITE_S (what is left stays claimed): at a
        stop, once nothing writes batches any more."""
        try:
            await asyncio.wait_for(self.write(everything=True), FINAL_WRITE_S)
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("held readings left to the deriver at the stop: %s", exc or "timed out")

    async def _next(self, last: float, idle: bool) -> bool:
        """Wait until the batches pause (True), or until `interval` has passed since
        `last` while they keep coming (False). When `idle` (nothing was due), first wait up to
        `interval` for a batch: held minutes end meanwhile."""
        if idle and not await self._held.added_within(self._interval):
            return True
        while True:
            came = await self._held.added_within(self._held.quiet(QUIET_S))
            if not came and not self._held.writing:
                return True
            if asyncio.get_running_loop().time() - last >= self._interval:
                return False

    async def write(self, everything: bool = False, pausing: bool = False) -> int:
        """Roll up what is due (everything held, if asked); the minute summaries it made.
        `pausing`: the batches have paused, so `paused` is told if anything is due."""
        taken = self._held.take(self._now_us(), everything)
        if taken is None:
            return 0
        if pausing:
            self._paused()  # the deriver takes up the machines while this rolls up
        lanes = taken.lanes(self._lanes, self._part_readings)
        # Side by side on connections of their own, each with its own agents' tag versions.
        tasks = [asyncio.ensure_future(self._write(lane)) for lane in lanes]
        try:
            # Waits for every lane, also when this is cancelled (gather cancels them first).
            done = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for lane, task in zip(lanes, tasks, strict=True):
                # A lane the database failed, or stopped (perhaps before it began): what it
                # took is held again, to be written later or at the stop.
                failed = task.done() and (
                    task.cancelled() or isinstance(task.exception(), psycopg.OperationalError)
                )
                if failed:
                    self._held.give_back(lane)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(cast(list[int], done))

    async def _write(self, taken: Taken) -> int:
        """Roll up these batches in one transaction; the minute summaries it made."""
        parts = taken.parts(self._part_readings)
        # numpy lets go of the GIL for most of this: ingest goes on meanwhile.
        summarizing = asyncio.ensure_future(asyncio.to_thread(_summarized, parts[0]))
        minutes = 0
        try:
            agents, epochs, batch_ids = (list(column) for column in zip(*taken.claims, strict=True))
            async with self._pool.connection() as conn, conn.transaction():
                # Also before deleting claims: the deriver deletes those it finds left.
                await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", [WRITER_KEY])
                await conn.execute(_AGENT_LOCKS, [WRITER_KEY, agents])
                await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", [LOCK_KEY])
                merging = False
                for number in range(len(parts)):
                    summaries = await summarizing
                    if number + 1 < len(parts):  # summarised while the database stores this
                        part = parts[number + 1]
                        summarizing = asyncio.ensure_future(asyncio.to_thread(_summarized, part))
                    minutes += len(summaries[0])
                    merging = await self._copy(conn, summaries, merging)
                if merging:
                    await self._merge(conn)
                await conn.execute(_UNCLAIM, [agents, epochs, batch_ids])
        except psycopg.OperationalError as exc:
            raise_if_cancelled(exc)
            raise  # the database is away: `write` holds them again, to try later
        except psycopg.Error:
            # Readings these summaries cannot be merged from (never seen): trying again would
            # fail again, so they are left to their claims, rolled up from the readings.
            log.exception("cannot roll up %d held batches; left to the deriver", len(taken.claims))
            return 0
        finally:
            summarizing.cancel()  # a part still being summarised when writing failed
        return minutes

    async def _copy(
        self,
        conn: AsyncConnection[TupleRow],
        summaries: tuple[Summaries, Summaries],
        merging: bool,
    ) -> bool:
        """Copy the summaries of buckets without a row straight into the rollups, the others
        into the temporary tables to be merged (created unless `merging`); whether those are
        in use now. The locks held keep every other writer of rollups away meanwhile, so no
        row appears between the look and the copy."""
        tables = ((MINUTES, NEW_MINUTES), (HOURS, NEW_HOURS))
        for (table, new), part in zip(tables, summaries, strict=True):
            if not len(part):
                continue
            known = await stored(conn, table, part)
            for target, rows in ((table, part.rows(~known)), (new, part.rows(known))):
                if not len(rows):
                    continue
                if target == new and not merging:
                    await conn.execute(CREATE_NEW)
                    merging = True
                encoded = await asyncio.to_thread(_copy_data, rows)
                copy_sql = _COPY.format(table=target, columns=SUMMARY_TABLE_COLUMNS)
                async with conn.cursor().copy(copy_sql) as copy:
                    await copy.write(encoded)
        return merging

    async def _merge(self, conn: AsyncConnection[TupleRow]) -> None:
        """Merge the copied summaries, and redo what they overlap from the readings."""
        left = await merge_summaries(conn)
        if left.minutes:  # their hours too
            await self._refresh(conn, left.minutes)
        redone = {(ids[0], floor_to(start, HOUR)) for ids, start, _ in left.minutes}
        hours = [span for span in left.hours if span[:2] not in redone]
        if hours:
            await refresh_hours(conn, hours)


def _summarized(columns: list[Columns]) -> tuple[Summaries, Summaries]:
    """The readings' minute and hour summaries."""
    minutes = summarize(Columns.joined(columns))
    return minutes, coarser(minutes)


def _copy_data(summaries: Summaries) -> bytes:
    """The summaries as binary COPY data."""
    return HEADER + summary_rows(summaries) + TRAILER
