"""Alert evaluation by exactly one collector: the holder of a session advisory lock.

The lock is held on a connection of the evaluator's own, and every evaluation writes on that
same connection: a collector that lost its connection lost the lock with it, and can no
longer write, so two collectors never evaluate at once. The others try to take the lock every
`alerts.lock_retry`. Where each rule stands is in PostgreSQL (alert_state), so whoever takes
over resumes it. One evaluation is one transaction: it takes up the logged writes of readings
(alert_log), evaluates the rules they touch, records alerts and their events, and deletes the
log rows it took, all or nothing.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from collector.agents import STATUS_EVENT
from collector.alerts.alerts import Recorder
from collector.alerts.kpi_rule import shift_at, shift_kpi, site_of
from collector.alerts.machine import (
    CLEAR,
    Reading,
    Threshold,
    Track,
    Transition,
    close,
    elapse,
    gaps,
    observe,
    run_threshold,
)
from collector.alerts.rules import (
    AgentOfflineCondition,
    KpiCondition,
    MachineStateCondition,
    Rule,
    TagStaleCondition,
    TagThresholdCondition,
    enabled_rules,
)
from collector.analytics.equipment import LossMapping
from collector.analytics.machine_events import STATE
from collector.config import AlertSettings
from collector.copy_rows import int4_values
from collector.metrics import CollectorMetrics
from shared.cancellation import raise_if_cancelled
from shared.invariants import required

log = logging.getLogger(__name__)

Conn = AsyncConnection[TupleRow]
EVALUATION_LOCK = 0x706C_616C  # "plal": the collector holding it evaluates alert rules
LOOK_S = 0.1
"""How often the evaluating collector looks for logged writes between passes (a cheap query)."""
CONNECT_TIMEOUT_S = 10.0
PAGE = 10_000
"""Most readings of one subject evaluated in one pass (the rest in the next)."""
EVENT_PAGE = 1000
"""Most stream events one rule reads in one pass."""
_MICROSECOND = timedelta(microseconds=1)
_NONE = timedelta(0)
# The session's settings: the server notices a vanished evaluator within about 20 s
# and releases its lock, and a hung statement does not hold the lock for ever.
_SESSION = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 5;"
    " SET tcp_keepalives_count = 3; SET statement_timeout = '60s'"
)
_READINGS = """
SELECT r.ts, CASE WHEN t.data_type = 'string' THEN NULL
    ELSE coalesce(r.value, r.value_text::float8) END, r.quality
FROM readings r JOIN tags t ON t.tag_id = r.tag_id
WHERE r.tag_id = ANY(%(ids)s) AND r.ts > %(after)s
  AND (%(before)s::timestamptz IS NULL OR r.ts < %(before)s)
ORDER BY r.ts, r.seq LIMIT %(limit)s
"""


def utc_now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


class AlertEvaluator:
    """Takes the evaluation lock when it can, and evaluates every `alerts.interval` while held."""

    def __init__(
        self,
        url: str,
        settings: AlertSettings,
        metrics: CollectorMetrics,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._url = url
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._failing = False
        self._kpi_due: dict[str, datetime] = {}

    async def run(self) -> None:
        """Until cancelled: own the evaluation when no other collector does, and evaluate."""
        while True:
            try:
                await self._own()
            except (psycopg.OperationalError, TimeoutError) as exc:
                raise_if_cancelled(exc)
                if not self._failing:
                    log.error("alert evaluation lost the database: %s; trying again", exc)
                self._failing = True
            finally:
                self._metrics.alert_owner.set(0)
            await asyncio.sleep(self._settings.lock_retry)

    async def _own(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                application_name="plantwire-alerts",
                options="-c TimeZone=UTC",
            )
        async with conn:
            await conn.execute(_SESSION)
            while not await self._take(conn):
                self._failing = False
                await asyncio.sleep(self._settings.lock_retry)
            log.info("this collector evaluates the alert rules now")
            self._failing = False
            self._metrics.alert_owner.set(1)
            while True:
                # At once again while passes are full: the log holds more than one pass takes.
                if await self.evaluate(conn) < self._settings.max_log_rows:
                    await self._until_due(conn)

    async def _until_due(self, conn: Conn) -> None:
        """Wait `alerts.interval` for the next pass, or less: until a write is logged (looked
        for every LOOK_S), so a reading over a threshold is judged within about LOOK_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.interval
        while loop.time() + LOOK_S < deadline:
            await asyncio.sleep(LOOK_S)
            cursor = await conn.execute("SELECT EXISTS (SELECT FROM alert_log)")
            if required(await cursor.fetchone(), "whether writes are logged")[0]:
                return
        await asyncio.sleep(max(0.0, deadline - loop.time()))

    @staticmethod
    async def _take(conn: Conn) -> bool:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (EVALUATION_LOCK,))
        return bool(required(await cursor.fetchone(), "the lock's answer")[0])

    async def evaluate(self, conn: Conn) -> int:
        """One pass, one transaction, on the connection holding the lock; the writes taken up."""
        now = self._clock()
        async with conn.transaction():
            rules = await enabled_rules(conn)
            cursor = await conn.execute(
                # The tag ids as sent: thousands per row, read as numpy arrays, not as ints.
                "DELETE FROM alert_log WHERE id IN (SELECT id FROM alert_log ORDER BY id"
                " LIMIT %s) RETURNING array_send(tag_ids), lo, logged_at",
                (self._settings.max_log_rows,),
            )
            rows = await cursor.fetchall()
            logged = Logged.of(rows, complete=len(rows) < self._settings.max_log_rows)
            recorder = Recorder(conn, now, self._settings.late_after)
            for rule in rules:
                if not self._due(rule, now):
                    continue
                subjects = Subjects(conn, rule, recorder)
                await subjects.load()
                await _evaluate(conn, rule, subjects, logged, now)
                await subjects.save()
        self._metrics.alert_evaluations.inc()
        for kind in recorder.fired:
            self._metrics.alerts_fired.labels(kind=kind).inc()
        oldest = min((row[2] for row in rows), default=None)
        self._metrics.alert_lag.set(0.0 if oldest is None else (now - oldest).total_seconds())
        return len(rows)

    def _due(self, rule: Rule, now: datetime) -> bool:
        """Whether a rule is evaluated in this pass: KPI rules every alerts.kpi_interval."""
        if not isinstance(rule.condition, KpiCondition):
            return True
        due = self._kpi_due.get(rule.id)
        if due is not None and now < due:
            return False
        self._kpi_due[rule.id] = now + timedelta(seconds=self._settings.kpi_interval)
        return True


@dataclass
class Logged:
    """What the log rows one pass took up say: per tag version, its earliest reading written
    and when each write arrived."""

    complete: bool
    """The pass took every row: no write is still waiting in the log."""
    los: list[datetime] = field(default_factory=list)
    """Per row, the earliest reading it wrote."""
    arrivals_at: list[datetime] = field(default_factory=list)
    """Per row, when it was logged."""
    tags: NDArray[np.int32] = field(default_factory=lambda: np.empty(0, np.int32))
    """Every row's tag versions, one after the other, ..."""
    owners: NDArray[np.intp] = field(default_factory=lambda: np.empty(0, np.intp))
    """... and the row each belongs to."""

    @classmethod
    def of(cls, rows: Sequence[tuple[bytes, datetime, datetime]], complete: bool) -> "Logged":
        """The log rows taken up: (array_send(tag_ids), lo, logged_at) each."""
        if not rows:
            return cls(complete)
        arrays = [int4_values(raw) for raw, _, _ in rows]
        owners = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
        los, arrivals = [row[1] for row in rows], [row[2] for row in rows]
        return cls(complete, los, arrivals, np.concatenate(arrays), owners)

    @cached_property
    def _by_tag(self) -> tuple[NDArray[np.int32], NDArray[np.intp]]:
        # Batches of 2000 tags a few hundred times a second: sorted once when a rule asks,
        # then looked up by bisection; a dict of them would take a Python step per tag and row.
        order = np.argsort(self.tags, kind="stable")
        return self.tags[order], self.owners[order]

    def _rows_of(self, tag_ids: Sequence[int]) -> list[int]:
        """The rows holding each of these tag versions (a row once per tag version of it)."""
        tags, owners = self._by_tag
        out: list[int] = []
        for tag in tag_ids:
            start, end = np.searchsorted(tags, [tag, tag + 1])
            out += owners[start:end].tolist()
        return out

    def earliest(self, tag_ids: Sequence[int]) -> datetime | None:
        """The earliest reading written of these tag versions, if any was."""
        return min((self.los[row] for row in self._rows_of(tag_ids)), default=None)

    def arrivals(self, tag_ids: Sequence[int]) -> list[datetime]:
        """When each write of these tag versions arrived, in order (once per version)."""
        return sorted(self.arrivals_at[row] for row in self._rows_of(tag_ids))


@dataclass
class Subject:
    """Where one subject of a rule stands: evaluated up to `until`, its track and open alert."""

    until: datetime
    track: Track
    alert_id: int | None
    changed: bool = False


class Subjects:
    """One rule's subjects in one pass: read at its start, their changes recorded (with their
    events) as they come, saved at its end."""

    def __init__(self, conn: Conn, rule: Rule, recorder: Recorder) -> None:
        self._conn = conn
        self.rule = rule
        self._recorder = recorder
        self.known: dict[str, Subject] = {}

    async def load(self) -> None:
        """Read the rule's subjects."""
        cursor = await self._conn.execute(
            "SELECT subject, evaluated_until, phase, since, value, alert_id FROM alert_state"
            " WHERE rule_id = %s",
            (self.rule.id,),
        )
        for subject, until, phase, since, value, alert_id in await cursor.fetchall():
            self.known[subject] = Subject(until, Track(phase, since, value), alert_id)

    def get(self, subject: str) -> Subject:
        """A subject's standing; a new one starts clear when the rule's condition did."""
        found = self.known.get(subject)
        if found is None:
            found = self.known[subject] = Subject(self.rule.evaluated_from, CLEAR, None)
        found.changed = True
        return found

    async def record(
        self,
        subject: str,
        alert_id: int | None,
        changes: Sequence[Transition],
        reason: str | None = None,
    ) -> int | None:
        """Record a subject's transitions; the alert left open after them."""
        return await self._recorder.record(
            self.rule.id, self.rule.kind, subject, alert_id, changes, reason
        )

    async def advance(
        self,
        subject: str,
        track: Track,
        changes: Sequence[Transition],
        reason: str | None = None,
    ) -> None:
        """Record the changes of a subject's current episode and keep its new track."""
        found = self.get(subject)
        found.alert_id = await self.record(subject, found.alert_id, changes, reason)
        found.track = track

    async def save(self) -> None:
        """Write the subjects that changed."""
        rows = [
            (self.rule.id, name, s.until, s.track.phase, s.track.since, s.track.value, s.alert_id)
            for name, s in self.known.items()
            if s.changed
        ]
        await self._conn.cursor().executemany(
            "INSERT INTO alert_state (rule_id, subject, evaluated_until, phase, since, value,"
            " alert_id) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (rule_id, subject)"
            " DO UPDATE SET evaluated_until = EXCLUDED.evaluated_until, phase = EXCLUDED.phase,"
            " since = EXCLUDED.since, value = EXCLUDED.value, alert_id = EXCLUDED.alert_id",
            rows,
        )


async def _evaluate(
    conn: Conn, rule: Rule, subjects: Subjects, logged: Logged, now: datetime
) -> None:
    condition = rule.condition
    if isinstance(condition, TagThresholdCondition):
        machine = condition.machine()
        for subject, tag_ids in await _tag_subjects(conn, condition):
            lo = logged.earliest(tag_ids)
            if lo is not None:
                await _ThresholdSubject(conn, subjects, subject, tag_ids, machine).run(lo)
    elif isinstance(condition, TagStaleCondition):
        await _stale(conn, condition, subjects, logged, now)
    elif isinstance(condition, KpiCondition):
        await _kpi(conn, condition, subjects, now)
    else:
        await _Follower(conn, subjects, condition).run(now)


async def _tag_subjects(
    conn: Conn, condition: TagThresholdCondition | TagStaleCondition
) -> list[tuple[str, list[int]]]:
    """Each agent's tag a rule watches, as a subject with its versions (one per data type)."""
    cursor = await conn.execute(
        "SELECT agent_id, array_agg(tag_id) FROM tags WHERE device = %s AND name = %s"
        " AND (%s::text IS NULL OR agent_id = %s) GROUP BY agent_id ORDER BY agent_id",
        (condition.device, condition.tag, condition.agent, condition.agent),
    )
    return [
        (f"{agent}/{condition.device}/{condition.tag}", list(tag_ids))
        for agent, tag_ids in await cursor.fetchall()
    ]


class _ThresholdSubject:
    """One agent's tag under one threshold rule, for one pass."""

    def __init__(
        self,
        conn: Conn,
        subjects: Subjects,
        subject: str,
        tag_ids: Sequence[int],
        machine: Threshold,
    ) -> None:
        self._conn = conn
        self._subjects = subjects
        self._subject = subject
        self._tag_ids = list(tag_ids)
        self._machine = machine

    async def run(self, lo: datetime) -> None:
        """Evaluate what was written since the last pass, the late part first."""
        state = self._subjects.get(self._subject)
        # What was written before the rule's condition began is not the rule's business.
        lo = max(lo, self._subjects.rule.evaluated_from)
        if lo <= state.until:
            await self._late(lo, state)
        readings = await self._readings(state.until, None, PAGE)
        if len(readings) == PAGE:
            # Stop before the last moment (its other readings may be on the next page), and
            # log what is left so the next pass goes on.
            last = readings[-1][0]
            readings = [r for r in readings if r[0] < last] or readings
            await self._conn.execute(
                "INSERT INTO alert_log (tag_ids, lo, hi) VALUES (%s, %s, %s)",
                (self._tag_ids, readings[-1][0] + _MICROSECOND, last),
            )
        track, changes = run_threshold(self._machine, state.track, readings)
        await self._subjects.advance(self._subject, track, changes)
        if readings:
            state.until = readings[-1][0]

    async def _late(self, lo: datetime, state: Subject) -> None:
        """Evaluate again, from clear, the time between recorded episodes that late readings
        fell into; what it finds is recorded with its true times."""
        cursor = await self._conn.execute(
            "SELECT started_at, resolved_at FROM alerts WHERE rule_id = %s AND subject = %s"
            " AND started_at <= %s AND (resolved_at IS NULL OR resolved_at >= %s)"
            " ORDER BY started_at",
            (self._subjects.rule.id, self._subject, state.until, lo),
        )
        for gap in gaps(lo, state.until, await cursor.fetchall()):
            end = gap.end + _MICROSECOND if gap.at_watermark else gap.end
            readings = await self._readings(gap.start - _MICROSECOND, end, None)
            found, changes = run_threshold(self._machine, CLEAR, readings)
            opened = await self._subjects.record(self._subject, None, changes)
            if gap.at_watermark:
                # Nothing was open (else a recorded episode would end the gap): what the late
                # readings left open is the subject's current episode.
                state.track, state.alert_id = found, opened
            else:
                # It ran into an episode recorded before: that one stands, this one ends there.
                _, ended = close(found, gap.end)
                await self._subjects.record(
                    self._subject, opened, ended, "ran into a later alert of this rule"
                )

    async def _readings(
        self, after: datetime, before: datetime | None, limit: int | None
    ) -> list[Reading]:
        cursor = await self._conn.execute(
            _READINGS,
            {"ids": self._tag_ids, "after": after, "before": before, "limit": limit},
        )
        return [(ts, value, quality) for ts, value, quality in await cursor.fetchall()]


async def _stale(
    conn: Conn, condition: TagStaleCondition, subjects: Subjects, logged: Logged, now: datetime
) -> None:
    """Arrivals of a tag's writes in order: a silence of `for_seconds` between two, or since
    the last one until now, is an episode from the silence's end of grace to the arrival."""
    silence = timedelta(seconds=condition.for_seconds)
    for subject, tag_ids in await _tag_subjects(conn, condition):
        state = subjects.get(subject)
        arrivals = logged.arrivals(tag_ids)
        changes: list[Transition] = []
        track = state.track
        for at in arrivals:
            if track.phase == "clear" and at - state.until >= silence:
                track, found = observe(
                    track, state.until + silence, entered=True, cleared=False, hold=_NONE
                )
                changes += found
            track, found = observe(track, at, entered=False, cleared=True, hold=_NONE)
            changes += found
            state.until = max(state.until, at)
        # Only with the whole log taken: a write still in it would make this silence untrue.
        if logged.complete and track.phase == "clear" and now - state.until >= silence:
            track, found = observe(
                track, state.until + silence, entered=True, cleared=False, hold=_NONE
            )
            changes += found
        await subjects.advance(subject, track, changes)


async def _kpi(conn: Conn, condition: KpiCondition, subjects: Subjects, now: datetime) -> None:
    """The KPI of the shift running now against the target; an episode ends with its shift.

    A KPI over a window has no moment it crossed the target: changes are timed at the
    evaluation that saw them (so they are never late).
    """
    subject = (
        condition.site if condition.machine is None else f"{condition.site}/{condition.machine}"
    )
    state = subjects.get(subject)
    site = await site_of(conn, condition.site)
    if state.track.phase != "clear":
        shift = None if site is None else shift_at(site, required(state.track.since, "start"))
        if shift is None or shift[1] <= now:
            track, changes = close(state.track, now if shift is None else shift[1])
            reason = "no such site" if site is None else "shift ended"
            await subjects.advance(subject, track, changes, reason)
    found = None if site is None else await shift_kpi(conn, site, condition, now)
    state.until = now
    if found is None or found.value is None or found.planned_s < condition.min_planned_seconds:
        return
    track, changes = observe(
        state.track,
        now,
        entered=found.value < condition.target,
        cleared=found.value >= condition.target,
        hold=_NONE,
        value=found.value,
    )
    await subjects.advance(subject, track, changes)


Observation = tuple[str, datetime, bool]
"""(subject, when, whether the condition holds) from one stream event."""


class _Follower:
    """A rule that follows stream events (agent.status, machine.state) from its own cursor;
    a pending episode fires by the clock once its hold has passed with nothing saying
    otherwise."""

    def __init__(
        self,
        conn: Conn,
        subjects: Subjects,
        condition: AgentOfflineCondition | MachineStateCondition,
    ) -> None:
        self._conn = conn
        self._subjects = subjects
        self._condition = condition
        self._hold = timedelta(seconds=condition.for_seconds)
        self._mappings: dict[str, LossMapping | None] = {}

    async def run(self, now: datetime) -> None:
        """Take up the events after the cursor, then let time pass to `now`."""
        rule = self._subjects.rule
        cursor = await self._conn.execute(
            "SELECT last_event_id FROM alert_cursors WHERE rule_id = %s", (rule.id,)
        )
        row = await cursor.fetchone()
        if row is None:
            # What holds already when the rule starts counts from then; the events appended
            # since are read next.
            cursor = await self._conn.execute(
                "SELECT coalesce(max(id), 0) FROM events WHERE at < %s", (rule.evaluated_from,)
            )
            position = int(required(await cursor.fetchone(), "the last event")[0])
            for subject, at, holds in await self._now_holding():
                await self._observe(subject, max(at, rule.evaluated_from), holds)
        else:
            position = int(row[0])
        kind = STATUS_EVENT if isinstance(self._condition, AgentOfflineCondition) else STATE
        cursor = await self._conn.execute(
            "SELECT id, subject, body FROM events WHERE id > %s AND kind = %s ORDER BY id LIMIT %s",
            (position, kind, EVENT_PAGE),
        )
        events = await cursor.fetchall()
        for event_id, subject, body in events:
            position = event_id
            found = await self._read(subject, body)
            if found is not None:
                await self._observe(*found)
        if len(events) < EVENT_PAGE:
            # Every event is read: nothing said otherwise until now.
            for name, state in list(self._subjects.known.items()):
                if state.track.phase == "pending":
                    fired = required(state.track.since, "the start") + self._hold
                    track, changes = elapse(state.track, now, self._hold, seen=fired)
                    await self._subjects.advance(name, track, changes)
        await self._conn.execute(
            "INSERT INTO alert_cursors (rule_id, last_event_id) VALUES (%s, %s)"
            " ON CONFLICT (rule_id) DO UPDATE SET last_event_id = EXCLUDED.last_event_id",
            (rule.id, position),
        )

    async def _observe(self, subject: str, at: datetime, holds: bool) -> None:
        state = self._subjects.get(subject)
        # Never before what was observed last: an earlier start that late data found does
        # not move an episode already recorded.
        at = max(at, state.until)
        track, changes = observe(state.track, at, entered=holds, cleared=not holds, hold=self._hold)
        await self._subjects.advance(subject, track, changes)
        state.until = at

    async def _now_holding(self) -> list[Observation]:
        condition = self._condition
        if isinstance(condition, AgentOfflineCondition):
            cursor = await self._conn.execute(
                "SELECT agent_id, status_since, status = 'offline' FROM agents"
                " WHERE %s::text IS NULL OR agent_id = %s ORDER BY agent_id",
                (condition.agent, condition.agent),
            )
            return [(agent, since, offline) for agent, since, offline in await cursor.fetchall()]
        cursor = await self._conn.execute(
            "SELECT DISTINCT ON (machine) machine, start_ts, state FROM machine_intervals"
            " WHERE site = %s AND (%s::text IS NULL OR machine = %s)"
            " ORDER BY machine, start_ts DESC",
            (condition.site, condition.machine, condition.machine),
        )
        found = []
        for machine, start, code in await cursor.fetchall():
            held = await self._in_states(condition, condition.site, code)
            found.append((f"{condition.site}/{machine}", start, held))
        return found

    async def _read(self, subject: str, body: dict[str, Any]) -> Observation | None:
        condition = self._condition
        at = datetime.fromisoformat(body["since"])
        if isinstance(condition, AgentOfflineCondition):
            if condition.agent not in (None, subject):
                return None
            return subject, at, body["status"] == "offline"
        if body["site"] != condition.site or condition.machine not in (None, body["machine"]):
            return None
        return subject, at, await self._in_states(condition, body["site"], body["state"])

    async def _in_states(self, condition: MachineStateCondition, site: str, code: Any) -> bool:
        if site not in self._mappings:
            cursor = await self._conn.execute(
                "SELECT spec -> 'loss_mapping' FROM equipment_sites WHERE site = %s", (site,)
            )
            row = await cursor.fetchone()
            self._mappings[site] = None if row is None else LossMapping.model_validate(row[0])
        mapping = self._mappings[site]
        return mapping is not None and mapping.state_of(code) in condition.states
