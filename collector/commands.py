"""Commands to equipment: kept in the commands table, sent to agents, their results recorded.

A command is stored `pending`, published on its agent's `cmd` topic and marked `sent` once
the broker has it. Every collector sends again the pending commands that have not expired
(the broker was away), and marks `timed_out` those still open after their expiry and the
grace; each agent applies a command once whatever it is sent, so two collectors sending
one command do no harm. A result may reach any collector: only an open command (or one that
timed out: the agent's word is what happened) takes it, once, with a `command.result` event
in the same transaction. docs/protocol.md (Commands) tells the whole story.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID, uuid4

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from collector.config import CommandSettings
from collector.events import Event, append_events
from collector.metrics import CollectorMetrics
from collector.pools import Pool
from shared.commands import CommandPayload, CommandResult, decode_result, encode_command
from shared.errors import MqttError, WireError
from shared.invariants import required
from shared.readings import Value
from shared.wire import Topics

log = logging.getLogger(__name__)

CommandStatus = Literal[
    "pending", "sent", "applied", "refused", "expired", "unreachable", "timed_out"
]
"""pending and sent are open; the others are final."""


@dataclass(frozen=True, slots=True)
class Command:
    """A command as stored."""

    id: UUID
    seq: int
    agent: str
    device: str
    tag: str
    value: Value
    requested_by: str
    requested_by_name: str
    requested_at: datetime
    expires_at: datetime
    status: CommandStatus
    reason: str | None
    value_before: Value | None
    value_after: Value | None
    sent_at: datetime | None
    finished_at: datetime | None

    def payload(self) -> CommandPayload:
        """What its agent is sent."""
        return CommandPayload(
            v=1,
            id=self.id,
            device=self.device,
            tag=self.tag,
            value=self.value,
            requested_at=self.requested_at,
            expires_at=self.expires_at,
            requested_by=f"key {self.requested_by} ({self.requested_by_name})",
        )

    def event(self) -> Event:
        """The `command.result` event of a finished command."""
        return Event(
            kind="command.result",
            subject=str(self.id),
            role="operator",
            body={
                "id": str(self.id),
                "agent": self.agent,
                "device": self.device,
                "tag": self.tag,
                "value": self.value,
                "status": self.status,
                "reason": self.reason,
                "value_before": self.value_before,
                "value_after": self.value_after,
                "requested_by": self.requested_by,
            },
        )


@dataclass(frozen=True, slots=True)
class CommandFilter:
    """What the audit is narrowed to (None: any)."""

    agent: str | None = None
    device: str | None = None
    tag: str | None = None
    status: str | None = None
    requested_by: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class Publisher(Protocol):
    """What sending commands needs of an MQTT client."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
    ) -> None:
        """Publish and wait for the broker's acknowledgement."""
        ...


_COLUMNS = sql.SQL(
    "id, seq, agent, device, tag, value, requested_by, requested_by_name, requested_at,"
    " expires_at, status, reason, value_before, value_after, sent_at, finished_at"
)

_RESULT = sql.SQL(
    "UPDATE commands SET status = %(status)s, reason = %(reason)s,"
    " value_before = %(before)s, value_after = %(after)s, finished_at = %(finished_at)s"
    " WHERE id = %(id)s AND agent = %(agent)s"
    " AND status IN ('pending', 'sent', 'timed_out') RETURNING {columns}"
).format(columns=_COLUMNS)

_TIME_OUT = sql.SQL(
    "UPDATE commands SET status = 'timed_out', finished_at = now(),"
    " reason = CASE status WHEN 'pending'"
    " THEN 'never handed to the broker before it expired'"
    " ELSE 'no result from the agent by its expiry and the grace' END"
    " WHERE status IN ('pending', 'sent')"
    " AND expires_at + make_interval(secs => %(grace)s) < now() RETURNING {columns}"
).format(columns=_COLUMNS)


def _json(value: Value | None) -> Jsonb | None:
    return None if value is None else Jsonb(value)


class Commands:
    """The commands table, sending commands to agents and taking their results."""

    def __init__(
        self,
        pool: Pool,
        publisher: Publisher,
        *,
        topics: Topics,
        settings: CommandSettings,
        metrics: CollectorMetrics,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._topics = topics
        self._settings = settings
        self._metrics = metrics
        self._failing = False

    async def _one(self, query: sql.Composed, params: dict[str, Any]) -> Command | None:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(query, params)).fetchone()
        return None if row is None else Command(*row)

    async def create(
        self,
        agent: str,
        device: str,
        tag: str,
        value: Value,
        expires_in: float,
        requested_by: tuple[str, str],
    ) -> Command:
        """Store a new command and send it; the answer says whether the broker took it."""
        query = sql.SQL(
            "INSERT INTO commands (id, agent, device, tag, value, requested_by,"
            " requested_by_name, expires_at) VALUES (%(id)s, %(agent)s, %(device)s, %(tag)s,"
            " %(value)s, %(by)s, %(name)s, now() + make_interval(secs => %(expires_in)s))"
            " RETURNING {columns}"
        ).format(columns=_COLUMNS)
        params = {
            "id": uuid4(),
            "agent": agent,
            "device": device,
            "tag": tag,
            "value": Jsonb(value),
            "by": requested_by[0],
            "name": requested_by[1],
            "expires_in": expires_in,
        }
        made = required(await self._one(query, params), "the new command")
        log.info(
            "command %s from key %s: %s %s/%s = %r",
            made.id,
            made.requested_by,
            agent,
            device,
            tag,
            value,
        )
        return await self.send(made)

    async def send(self, command: Command) -> Command:
        """Publish a command to its agent; once the broker has it, mark it sent."""
        topic = self._topics.command(command.agent, str(command.id))
        try:
            await self._publisher.publish(
                topic,
                encode_command(command.payload()),
                qos=1,
                timeout=self._settings.publish_timeout,
            )
        except MqttError as exc:
            self._metrics.command_send_failures.inc()
            if not self._failing:
                log.error("cannot send commands: %s; trying again", exc)
                self._failing = True
            return command
        if self._failing:
            log.info("sending commands again")
            self._failing = False
        query = sql.SQL(
            "UPDATE commands SET status = 'sent', sent_at = now()"
            " WHERE id = %(id)s AND status = 'pending' RETURNING {columns}"
        ).format(columns=_COLUMNS)
        # Not pending any more: its result came first, or another collector sent it.
        return await self._one(query, {"id": command.id}) or command

    async def get(self, command_id: UUID) -> Command | None:
        """One command, or None."""
        query = sql.SQL("SELECT {columns} FROM commands WHERE id = %(id)s").format(columns=_COLUMNS)
        return await self._one(query, {"id": command_id})

    async def listing(self, where: CommandFilter, before: int | None, limit: int) -> list[Command]:
        """Commands newest first, narrowed by `where`, before the one numbered `before`."""
        query = sql.SQL(
            "SELECT {columns} FROM commands WHERE seq < %(before)s"
            " AND (%(agent)s::text IS NULL OR agent = %(agent)s)"
            " AND (%(device)s::text IS NULL OR device = %(device)s)"
            " AND (%(tag)s::text IS NULL OR tag = %(tag)s)"
            " AND (%(status)s::text IS NULL OR status = %(status)s)"
            " AND (%(by)s::text IS NULL OR requested_by = %(by)s)"
            " AND (%(since)s::timestamptz IS NULL OR requested_at >= %(since)s)"
            " AND (%(until)s::timestamptz IS NULL OR requested_at < %(until)s)"
            " ORDER BY seq DESC LIMIT %(limit)s"
        ).format(columns=_COLUMNS)
        params = {
            "before": before if before is not None else 2**63 - 1,
            "agent": where.agent,
            "device": where.device,
            "tag": where.tag,
            "status": where.status,
            "by": where.requested_by,
            "since": where.since,
            "until": where.until,
            "limit": limit,
        }
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return [Command(*row) for row in await cursor.fetchall()]

    async def take_result(self, agent: str, kind: str, payload: bytes) -> None:
        """Record an agent's result message; raise WireError if it is not one of its commands'."""
        result = decode_result(payload)
        async with self._pool.connection() as conn, conn.transaction():
            finished = await self._record(conn, agent, result)
            if finished is None:
                cursor = await conn.execute(
                    "SELECT status FROM commands WHERE id = %s AND agent = %s", (result.id, agent)
                )
                if await cursor.fetchone() is None:
                    raise WireError(
                        f"a result for command {result.id}, which agent {agent} was not sent",
                        reason="result",
                    )
                return  # already final: another collector recorded it, or this is a repeat
            await append_events(conn, [finished.event()])
        self._metrics.commands.labels(status=finished.status).inc()
        log.info("command %s %s: %s", finished.id, finished.status, finished.reason or "ok")

    async def _record(
        self, conn: AsyncConnection[TupleRow], agent: str, result: CommandResult
    ) -> Command | None:
        cursor = await conn.execute(
            _RESULT,
            {
                "status": result.status,
                "reason": result.reason,
                "before": _json(result.value_before),
                "after": _json(result.value_after),
                "finished_at": result.finished_at,
                "id": result.id,
                "agent": agent,
            },
        )
        row = await cursor.fetchone()
        return None if row is None else Command(*row)

    async def time_out(self) -> list[Command]:
        """Mark timed_out the commands still open after their expiry and the grace."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(_TIME_OUT, {"grace": self._settings.grace})
            expired = [Command(*row) for row in await cursor.fetchall()]
            await append_events(conn, [command.event() for command in expired])
        for command in expired:
            self._metrics.commands.labels(status="timed_out").inc()
            log.warning("command %s timed out: %s", command.id, command.reason)
        return expired

    async def unsent(self) -> Sequence[Command]:
        """Pending commands not yet expired, oldest first (their first send failed)."""
        query = sql.SQL(
            "SELECT {columns} FROM commands WHERE status = 'pending' AND expires_at > now()"
            " AND requested_at < now() - make_interval(secs => %(settle)s)"
            " ORDER BY seq LIMIT 100"
        ).format(columns=_COLUMNS)
        async with self._pool.connection() as conn:
            # Left to the request that made it for a moment, which sends it itself.
            cursor = await conn.execute(query, {"settle": self._settings.publish_timeout})
            return [Command(*row) for row in await cursor.fetchall()]

    async def run(self) -> None:
        """Send again what the broker did not take, and time out what got no result."""
        while True:
            await self.time_out()
            for command in await self.unsent():
                await self.send(command)
            await asyncio.sleep(self._settings.check_interval)
