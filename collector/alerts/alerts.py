"""The alerts table: each episode a rule found, its changes recorded with their stream events
in the same transaction, so every change is announced exactly once."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from collector.alerts.machine import Transition
from collector.events import EVENTS_LOCK, Event, append_events
from collector.pools import Pool

PENDING, FIRING, RESOLVED, ACKNOWLEDGED = (
    "alert.pending",
    "alert.firing",
    "alert.resolved",
    "alert.acknowledged",
)
KINDS = (PENDING, FIRING, RESOLVED, ACKNOWLEDGED)
"""The stream's event kinds of alerts."""


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert as stored."""

    id: int
    rule_id: str
    kind: str
    subject: str
    state: str
    started_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    resolved_reason: str | None
    value: float | None
    late: bool
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_comment: str | None
    recorded_at: datetime
    updated_at: datetime


_COLUMNS = sql.SQL(
    "id, rule_id, kind, subject, state, started_at, fired_at, resolved_at, resolved_reason,"
    " value, late, acknowledged_at, acknowledged_by, ack_comment, recorded_at, updated_at"
)


def alert_event(kind: str, alert: Alert) -> Event:
    """The stream's event for a change of an alert: the alert as it is now."""
    body: dict[str, Any] = {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in asdict(alert).items()
    }
    return Event(kind=kind, subject=alert.subject, role="viewer", body=body)


async def _returning(
    conn: AsyncConnection[TupleRow], query: sql.Composed, params: Sequence[Any]
) -> Alert | None:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    return None if row is None else Alert(*row)


class Recorder:
    """Records a rule's transitions on one connection, in its transaction, with their events."""

    def __init__(self, conn: AsyncConnection[TupleRow], now: datetime, late_after: float) -> None:
        self._conn = conn
        self._now = now
        self._late_after = timedelta(seconds=late_after)
        self.fired: list[str] = []
        """The kinds of rules that fired, one entry per alert fired (for metrics)."""

    def _late(self, change: Transition) -> bool:
        return self._now - change.seen > self._late_after

    async def record(
        self,
        rule_id: str,
        kind: str,
        subject: str,
        alert_id: int | None,
        changes: Sequence[Transition],
        reason: str | None = None,
    ) -> int | None:
        """Apply the transitions of one subject in order; return the open alert's id after them.

        An episode already recorded (same rule, subject and start) is not recorded again, and a
        change already made is not made again: neither is announced twice.
        """
        events: list[Event] = []
        for change in changes:
            found: Alert | None
            if change.change == "resolved":
                found = await self._resolve(alert_id, change.at, reason)
                alert_id = None
                if found is not None:
                    events.append(alert_event(RESOLVED, found))
                continue
            if alert_id is None:
                found = await _returning(
                    self._conn,
                    sql.SQL(
                        "INSERT INTO alerts (rule_id, kind, subject, state, started_at, fired_at,"
                        " value, late) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (rule_id, subject, started_at) DO NOTHING RETURNING {c}"
                    ).format(c=_COLUMNS),
                    (
                        rule_id,
                        kind,
                        subject,
                        change.change,
                        change.started,
                        change.at if change.change == "firing" else None,
                        change.value,
                        self._late(change),
                    ),
                )
                if found is None:
                    alert_id = await self._recorded(rule_id, subject, change.started)
                    continue
                alert_id = found.id
            else:
                found = await _returning(
                    self._conn,
                    sql.SQL(
                        "UPDATE alerts SET state = 'firing', fired_at = %s, late = late OR %s,"
                        " updated_at = now() WHERE id = %s AND state = 'pending' RETURNING {c}"
                    ).format(c=_COLUMNS),
                    (change.at, self._late(change), alert_id),
                )
                if found is None:
                    continue
            events.append(alert_event(FIRING if found.state == "firing" else PENDING, found))
            if found.state == "firing":
                self.fired.append(kind)
        await append_events(self._conn, events)
        return alert_id

    async def _recorded(self, rule_id: str, subject: str, started: datetime) -> int | None:
        cursor = await self._conn.execute(
            "SELECT id FROM alerts WHERE rule_id = %s AND subject = %s AND started_at = %s"
            " AND state <> 'resolved'",
            (rule_id, subject, started),
        )
        row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def _resolve(
        self, alert_id: int | None, at: datetime, reason: str | None
    ) -> Alert | None:
        if alert_id is None:
            return None
        return await _returning(
            self._conn,
            sql.SQL(
                "UPDATE alerts SET state = 'resolved', resolved_at = %s, resolved_reason = %s,"
                " updated_at = now() WHERE id = %s AND state <> 'resolved' RETURNING {c}"
            ).format(c=_COLUMNS),
            (at, reason, alert_id),
        )


async def resolve_open(conn: AsyncConnection[TupleRow], rule_id: str, reason: str) -> None:
    """Resolve a rule's open alerts now, with the reason (in the caller's transaction)."""
    cursor = await conn.execute(
        sql.SQL(
            "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_reason = %s,"
            " updated_at = now() WHERE rule_id = %s AND state <> 'resolved' RETURNING {c}"
        ).format(c=_COLUMNS),
        (reason, rule_id),
    )
    resolved = [Alert(*row) for row in await cursor.fetchall()]
    await append_events(conn, [alert_event(RESOLVED, alert) for alert in resolved])


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts a listing shows (None: any)."""

    rule_id: str | None = None
    state: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    late: bool | None = None


class AlreadyAcknowledged(Exception):
    """The alert was acknowledged before: by whom and when."""

    def __init__(self, alert: Alert) -> None:
        super().__init__(f"acknowledged by {alert.acknowledged_by} at {alert.acknowledged_at}")
        self.alert = alert


class Alerts:
    """The alerts table, as the API reads it and operators acknowledge it."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def listing(
        self, where: AlertFilter, after: tuple[datetime, int] | None, limit: int
    ) -> list[Alert]:
        """Alerts by start, newest first, after the (started_at, id) `after`."""
        after_ts, after_id = after if after is not None else (None, None)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL(
                    "SELECT {c} FROM alerts WHERE (%(rule)s::text IS NULL OR rule_id = %(rule)s)"
                    " AND (%(state)s::text IS NULL OR state = %(state)s)"
                    " AND (%(subject)s::text IS NULL OR subject = %(subject)s)"
                    " AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)"
                    " AND (%(until)s::timestamptz IS NULL OR started_at < %(until)s)"
                    " AND (%(late)s::boolean IS NULL OR late = %(late)s)"
                    " AND (%(at)s::timestamptz IS NULL OR (started_at, id) < (%(at)s, %(id)s))"
                    " ORDER BY started_at DESC, id DESC LIMIT %(limit)s"
                ).format(c=_COLUMNS),
                {
                    "rule": where.rule_id,
                    "state": where.state,
                    "subject": where.subject,
                    "since": where.since,
                    "until": where.until,
                    "late": where.late,
                    "at": after_ts,
                    "id": after_id,
                    "limit": limit,
                },
            )
            return [Alert(*row) for row in await cursor.fetchall()]

    async def get(self, alert_id: int) -> Alert | None:
        """One alert, or None."""
        async with self._pool.connection() as conn:
            return await _returning(
                conn,
                sql.SQL("SELECT {c} FROM alerts WHERE id = %s").format(c=_COLUMNS),
                (alert_id,),
            )

    async def acknowledge(self, alert_id: int, by: str, comment: str) -> Alert | None:
        """Acknowledge an alert once (AlreadyAcknowledged the second time); None: no such one."""
        async with self._pool.connection() as conn, conn.transaction():
            # The events lock before the alert's row, as the evaluator takes them (it holds
            # the lock while it goes on to other alerts): the other order could deadlock.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))
            found = await _returning(
                conn,
                sql.SQL(
                    "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = %s,"
                    " ack_comment = %s, updated_at = now()"
                    " WHERE id = %s AND acknowledged_at IS NULL RETURNING {c}"
                ).format(c=_COLUMNS),
                (by, comment, alert_id),
            )
            if found is None:
                before = await _returning(
                    conn,
                    sql.SQL("SELECT {c} FROM alerts WHERE id = %s").format(c=_COLUMNS),
                    (alert_id,),
                )
                if before is not None:
                    raise AlreadyAcknowledged(before)
                return None
            await append_events(conn, [alert_event(ACKNOWLEDGED, found)])
            return found
