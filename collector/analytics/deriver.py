"""The deriver: takes up logged writes and keeps rollups and machine data derived from them.

One pass is one transaction: it reads the logged writes, rolls up the minutes they touched
that have ended, derives the intervals and counts of the machines whose tags they touched
(a machine.state stream event for each whose current state changed), and deletes the writes
it took up (logging again what waits for the running minute). Several collectors may run it:
an advisory lock lets one pass run at a time, and the rollup lock (LOCK_KEY below) keeps
passes that roll up apart from collectors' rollup writers.
"""

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.analytics.derive_plan import LoggedWrite, plan
from collector.analytics.machine_events import latest_spans, state_events
from collector.analytics.machine_store import (
    MachineKey,
    Rederivation,
    machines_of,
    rederive,
    slices,
)
from collector.analytics.timespans import floor_minute
from collector.config import AnalyticsSettings
from collector.copy_rows import int4_values
from collector.events import append_events
from collector.metrics import CollectorMetrics
from shared.cancellation import raise_if_cancelled
from shared.invariants import required

log = logging.getLogger(__name__)

Conn = AsyncConnection[TupleRow]
RollupRefresh = Callable[[Conn, Sequence[tuple[Sequence[int], datetime, datetime]]], Awaitable[int]]
"""Rolls up again the given tag versions over minute-aligned ranges, in the caller's transaction."""
PASS_KEY = 0x706C_6470  # "pldp": one deriver pass at a time across collectors
LOCK_KEY = 0x706C_6472  # "pldr": rollups (and, for earlier releases, their whole pass)
WRITER_KEY = 0x706C_6477  # "pldw": rollup writers, one per agent at a time
"""How the three locks fit: a pass that rolls up takes LOCK_KEY exclusively; rollup writers
and passes that only derive machines take it shared, so those two run side by side. A
rollup writer first takes WRITER_KEY shared and (WRITER_KEY, hashtext(agent)) for each agent
whose batches it writes (collector/analytics/rollup_writer.py). An earlier release's pass took
LOCK_KEY exclusively as its only lock, and its writer WRITER_KEY exclusively, so during a
rolling upgrade they still keep clear of every pass and writer of this one."""
SLICE_READINGS = 200_000
"""About the most of a machine's readings one pass derives (held in memory at once)."""
END_OF_TIME = datetime.max.replace(tzinfo=UTC)
CLAIM_TIMEOUT_S = 300.0
"""Age at which a batch's claim counts as left by a collector that stopped: its collector
writes its parts within about two minutes (collector/analytics/held_readings.py)."""
# Every machine's tag versions (a few per machine).
_WATCHED = """
SELECT t.tag_id, e.site, e.machine FROM equipment_tags e
JOIN tags t ON (t.agent_id, t.device, t.name) = (e.agent_id, e.device, e.name)
"""
_ANY_LEFT = """
SELECT EXISTS (SELECT FROM rollup_claims WHERE logged_at < now() - make_interval(secs => %s))
"""
_LEFT_CLAIMS = """
DELETE FROM rollup_claims WHERE (agent_id, epoch, batch_id) IN (
    SELECT agent_id, epoch, batch_id FROM rollup_claims
    WHERE logged_at < now() - make_interval(secs => %s) ORDER BY logged_at LIMIT %s
) RETURNING (
    SELECT coalesce(array_agg(tag_id ORDER BY tag_id), '{}') FROM tags
    WHERE tags.agent_id = rollup_claims.agent_id
), lo, hi
"""


def utc_now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


async def _touched_machines(
    conn: Conn, writes: Sequence[LoggedWrite]
) -> dict[MachineKey, datetime]:
    """The machines some of whose tag versions these writes touched, and the earliest time."""
    if not writes:
        return {}
    machines: dict[int, list[MachineKey]] = defaultdict(list)
    for tag_id, site, machine in await (await conn.execute(_WATCHED)).fetchall():
        machines[tag_id].append((site, machine))
    watched = np.fromiter(machines, np.int64, len(machines))
    out: dict[MachineKey, datetime] = {}
    for write in writes:
        tags = np.asarray(write.tag_ids)  # thousands per write, a few of them a machine's
        for tag in tags[np.isin(tags, watched)].tolist():
            for key in machines[tag]:
                if key not in out or write.lo < out[key]:
                    out[key] = write.lo
    return out


def in_groups(
    jobs: Sequence[Rederivation], sizes: Sequence[int], most: int
) -> Iterator[list[Rederivation]]:
    """The jobs in groups of about `most` readings at most (a larger job alone): each group is
    derived together, its readings in memory at once."""
    group: list[Rederivation] = []
    held = 0
    for job, size in zip(jobs, sizes, strict=True):
        if group and held + size > most:
            yield group
            group, held = [], 0
        group.append(job)
        held += size
    if group:
        yield group


class Deriver:
    """Keeps derived data up to date with the readings (runs supervised)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        settings: AnalyticsSettings,
        metrics: CollectorMetrics,
        refresh_rollups: RollupRefresh,
        clock: Callable[[], datetime] = utc_now,
        claim_timeout_s: float = CLAIM_TIMEOUT_S,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._metrics = metrics
        self._refresh_rollups = refresh_rollups
        self._clock = clock
        self._claim_timeout_s = claim_timeout_s
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Pass now, not at the next interval (the batches have paused)."""
        self._woken.set()

    async def run(self) -> None:
        """Pass after pass: at once while a pass found a full load or when woken, else every
        derive_interval."""
        while True:
            self._woken.clear()
            taken = await self.pass_once()
            if taken < self._settings.derive_max_log_rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), self._settings.derive_interval)
                raise_if_cancelled()  # wait_for can swallow a stop on 3.11 (gh-86296)

    async def pass_once(self) -> int:
        """One pass; how many logged writes, left claims and waiting machines it took up (0
        while another collector's pass runs)."""
        began = time.perf_counter()
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", [PASS_KEY])
            if not required(await cursor.fetchone(), "the lock's answer")[0]:
                return 0
            most = self._settings.derive_max_log_rows
            rows = await (
                await conn.execute(
                    # The tag ids as sent: thousands per row, read as numpy arrays.
                    "SELECT id, array_send(tag_ids), lo, hi, rollups, logged_at FROM derive_log"
                    " ORDER BY id LIMIT %s",
                    [most],
                    binary=True,
                )
            ).fetchall()
            left = await conn.execute(_ANY_LEFT, [self._claim_timeout_s])
            claims: list[Any] = []
            if any(row[4] for row in rows) or required(await left.fetchone(), "exists")[0]:
                # Rollups too: not while a collector's writer merges its parts (it holds this
                # lock shared for a moment).
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
                claims = await (
                    await conn.execute(_LEFT_CLAIMS, [self._claim_timeout_s, most])
                ).fetchall()
            else:  # machines alone, while writers merge
                await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", [LOCK_KEY])
            waiting = await (
                await conn.execute("SELECT site, machine, lo FROM derive_machines")
            ).fetchall()
            now = self._clock()
            writes = [LoggedWrite(row[0], int4_values(row[1]), *row[2:5]) for row in rows]
            writes += [LoggedWrite(0, row[0], row[1], row[2]) for row in claims]
            logged = [row[0] for row in rows]
            starts = await _touched_machines(conn, writes[: len(rows)])
            for site, machine, lo in waiting:
                starts[(site, machine)] = min(lo, starts.get((site, machine), lo))
            await self._take_up(conn, writes, logged, waiting, starts, now)
            oldest = min((row[5] for row in rows), default=now)
            self._metrics.derive_lag.set((now - oldest).total_seconds())
            left = required(
                await (
                    await conn.execute(
                        "SELECT (SELECT count(*) FROM derive_log)"
                        " + (SELECT count(*) FROM derive_machines)"
                    )
                ).fetchone(),
                "the count",
            )[0]
        self._metrics.derive_pending.set(left)
        self._metrics.derive_seconds.observe(time.perf_counter() - began)
        return len(rows) + len(claims) + len(waiting)

    async def _take_up(
        self,
        conn: Conn,
        writes: list[LoggedWrite],
        logged: list[int],
        waiting: Sequence[tuple[str, str, datetime]],
        starts: dict[MachineKey, datetime],
        now: datetime,
    ) -> None:
        """Roll up, derive the machines again from their starts, and forget what was done."""
        work = plan(writes, floor_minute(now))
        if work.rollups:
            await self._refresh_rollups(conn, work.rollups)
        for site, machine, lo in waiting:
            # Only as read: a model changed since then is derived again in the next pass.
            await conn.execute(
                "DELETE FROM derive_machines WHERE site = %s AND machine = %s AND lo = %s",
                (site, machine, lo),
            )
        machines = await machines_of(conn, list(starts))
        starts = {
            key: floor_minute(min(start, now)) for key, start in starts.items() if key in machines
        }
        # A long backlog is taken up a slice at a time, the rest in the next passes.
        found = await slices(
            conn, [(machines[key], start) for key, start in starts.items()], SLICE_READINGS
        )
        jobs = [
            Rederivation(key, machines[key], start, part.end or END_OF_TIME)
            for (key, start), part in zip(starts.items(), found, strict=True)
        ]
        before = await latest_spans(conn, list(starts))
        for group in in_groups(jobs, [part.readings for part in found], SLICE_READINGS):
            await rederive(conn, group)
        changed = state_events(before, await latest_spans(conn, list(starts)))
        rest = [(*job.key, job.until) for job in jobs if job.until != END_OF_TIME]
        if rest:
            await conn.execute(
                "INSERT INTO derive_machines (site, machine, lo)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[])"
                " ON CONFLICT (site, machine) DO UPDATE"
                " SET lo = least(derive_machines.lo, excluded.lo)",
                [list(column) for column in zip(*rest, strict=True)],
            )
        if logged:
            await conn.execute("DELETE FROM derive_log WHERE id = ANY(%s)", [logged])
        if work.pending is not None:
            await conn.execute(
                "INSERT INTO derive_log (tag_ids, lo, hi) VALUES (%s, %s, %s)", work.pending
            )
        # Last: the events' lock is held until this transaction commits, right after.
        await append_events(conn, changed)
