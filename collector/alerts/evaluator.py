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
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from collector.alerts.alerts import Recorder
from collector.alerts.machine import (
    CLEAR,
    Reading,
    Threshold,
    Track,
    Transition,
    close,
    gaps,
    run_threshold,
)
from collector.alerts.rules import Rule, TagThresholdCondition, enabled_rules
from collector.config import AlertSettings
from collector.metrics import CollectorMetrics
from shared.cancellation import raise_if_cancelled
from shared.invariants import required

log = logging.getLogger(__name__)

Conn = AsyncConnection[TupleRow]
EVALUATION_LOCK = 0x706C_616C  # "plal": the collector holding it evaluates alert rules
CONNECT_TIMEOUT_S = 10.0
PAGE = 10_000
"""Most readings of one subject evaluated in one pass (the rest in the next)."""
_MICROSECOND = timedelta(microseconds=1)
# Each pass's session settings: the server notices a vanished evaluator within about 20 s
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
                await self.evaluate(conn)
                await asyncio.sleep(self._settings.interval)

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
                "DELETE FROM alert_log WHERE id IN (SELECT id FROM alert_log ORDER BY id"
                " LIMIT %s) RETURNING tag_ids, lo, logged_at",
                (self._settings.max_log_rows,),
            )
            logged = await cursor.fetchall()
            touched: dict[int, datetime] = {}
            for tag_ids, lo, _ in logged:
                for tag_id in tag_ids:
                    touched[tag_id] = min(lo, touched.get(tag_id, lo))
            recorder = Recorder(conn, now, self._settings.late_after)
            for rule in rules:
                await self._rule(conn, rule, touched, recorder)
        self._metrics.alert_evaluations.inc()
        for kind in recorder.fired:
            self._metrics.alerts_fired.labels(kind=kind).inc()
        oldest = min((row[2] for row in logged), default=None)
        self._metrics.alert_lag.set(0.0 if oldest is None else (now - oldest).total_seconds())
        return len(logged)

    async def _rule(
        self, conn: Conn, rule: Rule, touched: dict[int, datetime], recorder: Recorder
    ) -> None:
        condition = rule.condition
        if isinstance(condition, TagThresholdCondition):
            await self._threshold(conn, rule, condition, touched, recorder)

    async def _threshold(
        self,
        conn: Conn,
        rule: Rule,
        condition: TagThresholdCondition,
        touched: dict[int, datetime],
        recorder: Recorder,
    ) -> None:
        # Each agent's tag is a subject; its versions (one per data type) are read as one.
        cursor = await conn.execute(
            "SELECT agent_id, array_agg(tag_id) FROM tags WHERE device = %s AND name = %s"
            " AND (%s::text IS NULL OR agent_id = %s) GROUP BY agent_id ORDER BY agent_id",
            (condition.device, condition.tag, condition.agent, condition.agent),
        )
        machine = condition.machine()
        for agent, tag_ids in await cursor.fetchall():
            lo = min((touched[i] for i in tag_ids if i in touched), default=None)
            if lo is not None:
                subject = f"{agent}/{condition.device}/{condition.tag}"
                await _ThresholdSubject(conn, rule, subject, tag_ids, machine, recorder).run(lo)


class _ThresholdSubject:
    """One agent's tag under one threshold rule, for one pass."""

    def __init__(
        self,
        conn: Conn,
        rule: Rule,
        subject: str,
        tag_ids: Sequence[int],
        machine: Threshold,
        recorder: Recorder,
    ) -> None:
        self._conn = conn
        self._rule = rule
        self._subject = subject
        self._tag_ids = list(tag_ids)
        self._machine = machine
        self._recorder = recorder

    async def run(self, lo: datetime) -> None:
        """Evaluate what was written since the last pass, the late part first."""
        cursor = await self._conn.execute(
            "SELECT evaluated_until, phase, since, value, alert_id FROM alert_state"
            " WHERE rule_id = %s AND subject = %s",
            (self._rule.id, self._subject),
        )
        row = await cursor.fetchone()
        if row is None:
            # A new subject starts when the rule's condition did: what was written before is
            # not the rule's business.
            until, track, alert_id = self._rule.evaluated_from, CLEAR, None
        else:
            until, track, alert_id = row[0], Track(row[1], row[2], row[3]), row[4]
        lo = max(lo, self._rule.evaluated_from)
        if lo <= until:
            track, alert_id = await self._late(lo, until, track, alert_id)
        readings = await self._readings(until, None, PAGE)
        if len(readings) == PAGE:
            # Stop before the last moment (its other readings may be on the next page), and
            # log what is left so the next pass goes on.
            last = readings[-1][0]
            readings = [r for r in readings if r[0] < last] or readings
            await self._conn.execute(
                "INSERT INTO alert_log (tag_ids, lo, hi) VALUES (%s, %s, %s)",
                (self._tag_ids, readings[-1][0] + _MICROSECOND, last),
            )
        track, changes = run_threshold(self._machine, track, readings)
        alert_id = await self._record(alert_id, changes)
        if readings:
            until = readings[-1][0]
        await self._conn.execute(
            "INSERT INTO alert_state (rule_id, subject, evaluated_until, phase, since, value,"
            " alert_id) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (rule_id, subject)"
            " DO UPDATE SET evaluated_until = EXCLUDED.evaluated_until, phase = EXCLUDED.phase,"
            " since = EXCLUDED.since, value = EXCLUDED.value, alert_id = EXCLUDED.alert_id",
            (self._rule.id, self._subject, until, track.phase, track.since, track.value, alert_id),
        )

    async def _late(
        self, lo: datetime, until: datetime, track: Track, alert_id: int | None
    ) -> tuple[Track, int | None]:
        """Evaluate again, from clear, the time between recorded episodes that late readings
        fell into; what it finds is recorded with its true times."""
        cursor = await self._conn.execute(
            "SELECT started_at, resolved_at FROM alerts WHERE rule_id = %s AND subject = %s"
            " AND started_at <= %s AND (resolved_at IS NULL OR resolved_at >= %s)"
            " ORDER BY started_at",
            (self._rule.id, self._subject, until, lo),
        )
        for gap in gaps(lo, until, await cursor.fetchall()):
            end = gap.end + _MICROSECOND if gap.at_watermark else gap.end
            readings = await self._readings(gap.start - _MICROSECOND, end, None)
            found, changes = run_threshold(self._machine, CLEAR, readings)
            opened = await self._record(None, changes)
            if gap.at_watermark:
                # Nothing was open (else a recorded episode would end the gap): what the late
                # readings left open is the subject's current episode.
                track, alert_id = found, opened
            else:
                # It ran into an episode recorded before: that one stands, this one ends there.
                _, ended = close(found, gap.end)
                await self._record(opened, ended, "ran into a later alert of this rule")
        return track, alert_id

    async def _readings(
        self, after: datetime, before: datetime | None, limit: int | None
    ) -> list[Reading]:
        cursor = await self._conn.execute(
            _READINGS,
            {"ids": self._tag_ids, "after": after, "before": before, "limit": limit},
        )
        return [(ts, value, quality) for ts, value, quality in await cursor.fetchall()]

    async def _record(
        self, alert_id: int | None, changes: Sequence[Transition], reason: str | None = None
    ) -> int | None:
        return await self._recorder.record(
            self._rule.id, self._rule.kind, self._subject, alert_id, changes, reason
        )
