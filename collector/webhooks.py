"""Webhooks: events fanned out into a durable outbox, delivered signed (Standard Webhooks).

The fan-out turns each new event (collector/events.py) into one message per endpoint that
wants it; the delivery worker of every collector claims due messages with a lease, posts them
with no transaction open, and records each attempt. docs/webhooks.md tells the whole story.
"""

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from standardwebhooks import Webhook

from collector.config import WebhookSettings
from collector.events import StoredEvent, events_after
from collector.metrics import CollectorMetrics
from collector.pools import Pool
from shared.cancellation import raise_if_cancelled
from shared.invariants import required

log = logging.getLogger(__name__)

FAN_OUT_LOCK = 0x706C_7768  # "plwh": one collector fans out at a time
ROTATION_GRACE_S = 24 * 3600.0
"""After a rotation the previous secret signs alongside the new one this long."""
MAX_IN_FLIGHT = 16
"""Most messages one collector delivers at once (each to a different endpoint)."""
LEASE_MARGIN_S = 30.0
"""A claim outlasts the attempt's timeout by this much, for recording its result."""
GONE = 410
BACKLOG_S = 10.0
"""How often the age of the oldest undelivered message is read for the metrics."""
WHSEC = "whsec_"
"""How every signing secret starts (the Standard Webhooks scheme)."""


def new_endpoint_id() -> str:
    """A fresh endpoint id: wh_ and 96 random bits in hex."""
    return f"wh_{secrets.token_hex(12)}"


def new_secret() -> str:
    """A fresh signing secret as Standard Webhooks writes one: whsec_ and 32 bytes in base64."""
    return WHSEC + base64.b64encode(secrets.token_bytes(32)).decode()


def message_id(endpoint_id: str, event_id: int) -> str:
    """The webhook-id header of a message: the same on every attempt, so receivers deduplicate."""
    return f"msg_{endpoint_id}_{event_id}"


def payload(event: StoredEvent) -> dict[str, Any]:
    """The JSON body a message carries for an event."""
    return {
        "type": event.kind,
        "timestamp": event.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {"id": event.id, "subject": event.subject, "body": event.body},
    }


def signature(
    secret: str,
    previous: str | None,
    previous_until: datetime | None,
    msg_id: str,
    at: datetime,
    body: str,
) -> str:
    """The webhook-signature header: v1 with the secret, and with the previous one in its grace."""
    signatures = [Webhook(secret).sign(msg_id, at, body)]
    if previous is not None and previous_until is not None and at < previous_until:
        signatures.append(Webhook(previous).sign(msg_id, at, body))
    return " ".join(signatures)


def retry_delay(attempts: int, delays: Sequence[float]) -> float:
    """The wait after the `attempts`-th failed attempt (1 for the first); the last one repeats."""
    return delays[min(attempts, len(delays)) - 1]


async def fan_out(conn: AsyncConnection[TupleRow]) -> int:
    """Turn the next page of events into messages; return how many events it read.

    0: nothing new, or another collector is fanning out right now (it will do it).
    """
    async with conn.transaction():
        cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (FAN_OUT_LOCK,))
        if not required(await cursor.fetchone(), "the lock's answer")[0]:
            return 0
        cursor = await conn.execute("SELECT last_event_id FROM webhook_cursor")
        last = int(required(await cursor.fetchone(), "the webhook cursor")[0])
        events = await events_after(conn, last)
        cursor = await conn.execute(
            "SELECT id, kinds, after_event_id FROM webhook_endpoints WHERE enabled"
        )
        endpoints = await cursor.fetchall()
        rows = [
            (endpoint, event.id, event.kind, Jsonb(payload(event)))
            for event in events
            for endpoint, kinds, after in endpoints
            if event.id > after and (not kinds or event.kind in kinds)
        ]
        # In event order, so each endpoint's messages are ordered as its events are.
        await conn.cursor().executemany(
            "INSERT INTO webhook_messages (endpoint_id, event_id, kind, payload)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            rows,
        )
        if events:
            await conn.execute("UPDATE webhook_cursor SET last_event_id = %s", (events[-1].id,))
        return len(events)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message this collector holds a lease on, with what delivering it needs."""

    id: int
    endpoint_id: str
    event_id: int
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    leased_until: datetime
    url: str
    secret: str
    previous_secret: str | None
    previous_until: datetime | None


# Each enabled endpoint's oldest pending message, if due and not leased: only it may be in
# flight, so an endpoint's messages arrive in order and a failing one holds back only its own.
# FOR UPDATE SKIP LOCKED keeps two collectors off one message; rows changed meanwhile (leased
# or delivered by another) are checked again against the WHERE and left out.
_CLAIM = """
WITH due AS (
    SELECT m.id FROM webhook_endpoints w
    CROSS JOIN LATERAL (
        SELECT id FROM webhook_messages
        WHERE endpoint_id = w.id AND state = 'pending' ORDER BY event_id LIMIT 1
    ) head
    JOIN webhook_messages m ON m.id = head.id
    WHERE w.enabled AND m.state = 'pending' AND m.next_attempt_at <= now()
      AND (m.leased_until IS NULL OR m.leased_until <= now())
    LIMIT %(limit)s
    FOR UPDATE OF m SKIP LOCKED
)
UPDATE webhook_messages m SET leased_until = now() + make_interval(secs => %(lease)s)
FROM due, webhook_endpoints w
WHERE m.id = due.id AND w.id = m.endpoint_id
RETURNING m.id, m.endpoint_id, m.event_id, m.payload, m.created_at, m.attempts, m.leased_until,
    w.url, w.secret, w.previous_secret, w.previous_until
"""

_SETTLE = """
UPDATE webhook_messages SET attempts = attempts + 1, leased_until = NULL,
    state = CASE
        WHEN %(delivered)s THEN 'delivered'
        WHEN %(gone)s THEN 'pending'
        WHEN now() + make_interval(secs => %(delay)s)
            > created_at + make_interval(secs => %(give_up)s) THEN 'failed'
        ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s AND leased_until = %(lease)s
"""


class WebhookDelivery:
    """Fans out new events and delivers due messages, for as long as the collector runs."""

    def __init__(
        self,
        pool: Pool,
        settings: WebhookSettings,
        metrics: CollectorMetrics,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._metrics = metrics
        self._backlog_read = -BACKLOG_S
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New events were appended: fan them out and deliver now, not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; a database error ends it (the supervisor restarts it).

        Deliveries in flight when it ends keep their lease until it runs out; then any
        collector tries them again (at least once, never twice at the same time).
        """
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as tasks:
            while True:
                async with self._pool.connection() as conn:
                    while await fan_out(conn):
                        pass
                    for message in await self._claim(conn):
                        self._in_flight += 1
                        tasks.create_task(self._deliver(session, message))
                    if time.monotonic() - self._backlog_read >= BACKLOG_S:
                        await self._read_backlog(conn)
                try:
                    async with asyncio.timeout(self._settings.poll_interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()

    async def _claim(self, conn: AsyncConnection[TupleRow]) -> list[Claimed]:
        cursor = await conn.execute(
            _CLAIM,
            {
                "limit": self._max_in_flight - self._in_flight,
                "lease": self._settings.timeout + LEASE_MARGIN_S,
            },
        )
        return [Claimed(*row) for row in await cursor.fetchall()]

    async def _read_backlog(self, conn: AsyncConnection[TupleRow]) -> None:
        cursor = await conn.execute(
            # A disabled endpoint's messages wait for it on purpose: not a backlog.
            "SELECT coalesce(extract(epoch FROM now() - min(m.created_at)), 0)::float8"
            " FROM webhook_messages m JOIN webhook_endpoints w ON w.id = m.endpoint_id"
            " WHERE m.state = 'pending' AND w.enabled"
        )
        self._metrics.webhook_backlog.set(required(await cursor.fetchone(), "the backlog")[0])
        self._backlog_read = time.monotonic()

    async def _deliver(self, session: aiohttp.ClientSession, message: Claimed) -> None:
        try:
            status, error, started, duration_ms = await self._post(session, message)
            await self._settle(message, status, error, started, duration_ms)
        finally:
            self._in_flight -= 1
            self._wake.set()  # the endpoint's next message may go now

    async def _post(
        self, session: aiohttp.ClientSession, message: Claimed
    ) -> tuple[int | None, str | None, datetime, int]:
        msg_id = message_id(message.endpoint_id, message.event_id)
        body = json.dumps(message.payload, separators=(",", ":"))
        started = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "plantwire-collector",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(started.timestamp())),
            "webhook-signature": signature(
                message.secret,
                message.previous_secret,
                message.previous_until,
                msg_id,
                started,
                body,
            ),
        }
        status: int | None = None
        error: str | None = None
        clock = time.monotonic()
        try:
            # Redirects are not followed: the endpoint's URL is the one an admin checked.
            async with session.post(
                message.url, data=body.encode(), headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except TimeoutError as exc:
            raise_if_cancelled(exc)
            error = f"no answer within {self._settings.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:500]
        return status, error, started, round((time.monotonic() - clock) * 1000)

    async def _settle(
        self,
        message: Claimed,
        status: int | None,
        error: str | None,
        started: datetime,
        duration_ms: int,
    ) -> None:
        delivered = status is not None and 200 <= status < 300
        gone = status == GONE
        outcome = (
            "delivered"
            if delivered
            else "gone"
            if gone
            else "unanswered"
            if status is None
            else "refused"
        )
        self._metrics.webhook_attempts.labels(outcome=outcome).inc()
        self._metrics.webhook_seconds.observe(duration_ms / 1000)
        delay = 0.0 if gone else retry_delay(message.attempts + 1, self._settings.retry_delays)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO webhook_attempts (message_id, at, status, error, duration_ms)"
                " VALUES (%s, %s, %s, %s, %s)",
                (message.id, started, status, error, duration_ms),
            )
            # Only while the lease holds: one that ran out may be another collector's now.
            await conn.execute(
                _SETTLE,
                {
                    "delivered": delivered,
                    "gone": gone,
                    "delay": delay,
                    "give_up": self._settings.give_up_after,
                    "id": message.id,
                    "lease": message.leased_until,
                },
            )
            if gone:
                reason = f"the receiver answered 410 Gone at {started.isoformat()}"
                await conn.execute(
                    "UPDATE webhook_endpoints SET enabled = false, disabled_reason = %s"
                    " WHERE id = %s",
                    (reason, message.endpoint_id),
                )
                log.warning("webhook %s answered 410 Gone: disabled", message.endpoint_id)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A webhook endpoint as stored."""

    id: str
    url: str
    kinds: list[str]
    secret: str
    previous_secret: str | None
    previous_until: datetime | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class Message:
    """An outbox message as listed, with its last attempt's answer."""

    id: int
    webhook_id: str
    event_id: int
    kind: str
    state: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_status: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt."""

    id: int
    at: datetime
    status: int | None
    error: str | None
    duration_ms: int


_ENDPOINT = sql.SQL(
    "id, url, kinds, secret, previous_secret, previous_until, enabled, disabled_reason,"
    " created_at, created_by"
)


class WebhookEndpoints:
    """The webhook_endpoints table and what its endpoints were sent."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def _one(
        self, query: sql.Composed, params: Sequence[Any] | dict[str, Any]
    ) -> Endpoint | None:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(query, params)).fetchone()
        return None if row is None else Endpoint(*row)

    async def create(self, url: str, kinds: list[str], created_by: str) -> Endpoint:
        """Store a new endpoint; it gets the events appended from now on."""
        query = sql.SQL(
            "INSERT INTO webhook_endpoints (id, url, kinds, secret, after_event_id, created_by)"
            " VALUES (%s, %s, %s, %s, (SELECT coalesce(max(id), 0) FROM events), %s)"
            " RETURNING {columns}"
        ).format(columns=_ENDPOINT)
        made = await self._one(query, (new_endpoint_id(), url, kinds, new_secret(), created_by))
        return required(made, "the new endpoint")

    async def listing(self, after: str | None, limit: int) -> list[Endpoint]:
        """Endpoints by id, after `after`."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL(
                    "SELECT {columns} FROM webhook_endpoints WHERE id > %s ORDER BY id LIMIT %s"
                ).format(columns=_ENDPOINT),
                (after or "", limit),
            )
            return [Endpoint(*row) for row in await cursor.fetchall()]

    async def get(self, endpoint_id: str) -> Endpoint | None:
        """One endpoint, or None."""
        query = sql.SQL("SELECT {columns} FROM webhook_endpoints WHERE id = %s").format(
            columns=_ENDPOINT
        )
        return await self._one(query, (endpoint_id,))

    async def update(
        self,
        endpoint_id: str,
        url: str | None,
        kinds: list[str] | None,
        enabled: bool | None,
        by: str,
    ) -> Endpoint | None:
        """Change what is given (None: unchanged); enabling clears why it was disabled."""
        query = sql.SQL(
            "UPDATE webhook_endpoints SET url = coalesce(%(url)s::text, url),"
            " kinds = coalesce(%(kinds)s::text[], kinds),"
            " enabled = coalesce(%(enabled)s::boolean, enabled),"
            " disabled_reason = CASE WHEN %(enabled)s::boolean THEN NULL"
            " WHEN NOT %(enabled)s::boolean AND enabled THEN %(reason)s"
            " ELSE disabled_reason END"
            " WHERE id = %(id)s RETURNING {columns}"
        ).format(columns=_ENDPOINT)
        params = {
            "url": url,
            "kinds": kinds,
            "enabled": enabled,
            "reason": f"disabled by {by}",
            "id": endpoint_id,
        }
        return await self._one(query, params)

    async def delete(self, endpoint_id: str) -> Endpoint | None:
        """Delete an endpoint and its messages; what it was, or None if there was none."""
        query = sql.SQL("DELETE FROM webhook_endpoints WHERE id = %s RETURNING {columns}").format(
            columns=_ENDPOINT
        )
        return await self._one(query, (endpoint_id,))

    async def rotate(self, endpoint_id: str) -> Endpoint | None:
        """A new secret; the current one keeps signing alongside for ROTATION_GRACE_S."""
        query = sql.SQL(
            "UPDATE webhook_endpoints SET previous_secret = secret,"
            " previous_until = now() + make_interval(secs => %s), secret = %s"
            " WHERE id = %s RETURNING {columns}"
        ).format(columns=_ENDPOINT)
        return await self._one(query, (ROTATION_GRACE_S, new_secret(), endpoint_id))

    async def messages(self, endpoint_id: str, after: int, limit: int) -> list[Message]:
        """The endpoint's messages by id (oldest first), after the id `after`."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT m.id, m.endpoint_id, m.event_id, m.kind, m.state, m.attempts,"
                " m.next_attempt_at, m.created_at, a.status, a.error"
                " FROM webhook_messages m LEFT JOIN LATERAL (SELECT status, error"
                " FROM webhook_attempts WHERE message_id = m.id ORDER BY id DESC LIMIT 1) a"
                " ON true WHERE m.endpoint_id = %s AND m.id > %s ORDER BY m.id LIMIT %s",
                (endpoint_id, after, limit),
            )
            rows = await cursor.fetchall()
        return [Message(row[0], message_id(row[1], row[2]), *row[2:]) for row in rows]

    async def attempts(
        self, endpoint_id: str, message: int, after: int, limit: int
    ) -> list[Attempt] | None:
        """A message's attempts, oldest first; None if the endpoint has no such message."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT 1 FROM webhook_messages WHERE id = %s AND endpoint_id = %s",
                (message, endpoint_id),
            )
            if await cursor.fetchone() is None:
                return None
            cursor = await conn.execute(
                "SELECT id, at, status, error, duration_ms FROM webhook_attempts"
                " WHERE message_id = %s AND id > %s ORDER BY id LIMIT %s",
                (message, after, limit),
            )
            return [Attempt(*row) for row in await cursor.fetchall()]
