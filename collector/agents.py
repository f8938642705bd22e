"""The agent registry: who is online, what each agent last reported, and who went silent."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from collector.events import Event, append_events
from collector.replica import ReadPools
from shared.agent_status import decode_heartbeat, decode_state
from shared.errors import WireError
from shared.invariants import required

_COLUMNS = sql.SQL(
    "agent_id, status, status_since, first_seen, last_seen, version, config_hash, devices,"
    " epoch, last_heartbeat, last_heartbeat_at"
)


STATUS_EVENT = "agent.status"


def status_event(agent: str, status: str, since: datetime) -> Event:
    """The stream's event for an agent whose status changed."""
    return Event(
        kind=STATUS_EVENT,
        subject=agent,
        role="viewer",
        body={"agent": agent, "status": status, "since": since.isoformat()},
    )


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One row of the agents table."""

    agent_id: str
    status: str
    status_since: datetime
    first_seen: datetime
    last_seen: datetime
    version: str | None
    config_hash: str | None
    devices: list[str] | None
    epoch: int | None
    last_heartbeat: dict[str, Any] | None
    last_heartbeat_at: datetime | None


class AgentRegistry:
    """Records birth, death and heartbeat messages; marks silent agents offline."""

    def __init__(
        self, pool: AsyncConnectionPool[AsyncConnection[TupleRow]], reads: ReadPools | None = None
    ) -> None:
        self._pool = pool
        self._reads = reads or ReadPools(pool)

    async def __call__(self, agent: str, kind: str, payload: bytes) -> None:
        """Record one status message; raise WireError if it is not one."""
        if kind == "state":
            if not payload:  # a cleared retained message
                return
            state = decode_state(payload)
            await self._execute(
                "INSERT INTO agents (agent_id, status, version, config_hash, devices, epoch)"
                " VALUES (%(a)s, %(s)s, %(v)s, %(h)s, %(d)s, nullif(%(e)s, 0))"
                " ON CONFLICT (agent_id) DO UPDATE SET"
                " status_since = CASE WHEN agents.status = EXCLUDED.status"
                "   THEN agents.status_since ELSE now() END,"
                " status = EXCLUDED.status, version = EXCLUDED.version,"
                " config_hash = EXCLUDED.config_hash, devices = EXCLUDED.devices,"
                " epoch = coalesce(EXCLUDED.epoch, agents.epoch),"
                " last_seen = CASE WHEN EXCLUDED.status = 'online' THEN now()"
                "   ELSE agents.last_seen END"
                " RETURNING agent_id, status, status_since, status_since = now()",
                {
                    "a": agent,
                    "s": state.status,
                    "v": state.version,
                    "h": state.config_hash,
                    "d": Jsonb(state.devices),
                    "e": state.epoch,
                },
            )
        elif kind == "heartbeat":
            beat = decode_heartbeat(payload)
            await self._execute(
                "INSERT INTO agents (agent_id, status, last_heartbeat, last_heartbeat_at)"
                " VALUES (%(a)s, 'online', %(b)s, now())"
                " ON CONFLICT (agent_id) DO UPDATE SET last_seen = now(),"
                " status_since = CASE WHEN agents.status = 'online'"
                "   THEN agents.status_since ELSE now() END,"
                " status = 'online', last_heartbeat = EXCLUDED.last_heartbeat,"
                " last_heartbeat_at = now()"
                " RETURNING agent_id, status, status_since, status_since = now()",
                {"a": agent, "b": Jsonb(json.loads(beat.model_dump_json()))},
            )
        else:
            raise WireError(f"unexpected topic kind {kind!r}", reason="topic")

    async def _execute(self, sql: str, params: dict[str, Any]) -> None:
        # The statement returns the agent, its status and whether that changed: only a change
        # sets status_since to now() (the transaction's start), an insert included (unknown).
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(sql.encode(), params)
            agent, status, since, changed = required(await cursor.fetchone(), "the agent's row")
            if changed:
                await append_events(conn, [status_event(agent, status, since)])

    async def mark_silent_offline(self, grace_s: float) -> list[str]:
        """Set agents offline whose last birth or heartbeat is `grace_s` old; return their ids.

        Batches do not count: an agent whose health reporting hangs is not healthy.
        """
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "UPDATE agents SET status = 'offline', status_since = now()"
                " WHERE status = 'online' AND greatest(status_since, last_heartbeat_at)"
                " < now() - make_interval(secs => %s)"
                " RETURNING agent_id, status_since",
                (grace_s,),
            )
            silent = await cursor.fetchall()
            await append_events(
                conn, [status_event(agent, "offline", since) for agent, since in silent]
            )
            return [agent for agent, _ in silent]

    async def online(self) -> dict[str, bool]:
        """Whether each known agent is online, read from the primary (it decides liveness)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT agent_id, status = 'online' FROM agents")
            return {agent: bool(is_online) for agent, is_online in await cursor.fetchall()}

    async def list(
        self, agent_id: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[AgentRecord]:
        """Agents by id (after `after`, at most `limit`), or the one with this id.

        Read from the read replica, if there is one.
        """

        async def select(conn: AsyncConnection[TupleRow]) -> list[AgentRecord]:
            cursor = await conn.execute(
                sql.SQL(
                    "SELECT {columns} FROM agents"
                    " WHERE (%(id)s::text IS NULL OR agent_id = %(id)s)"
                    " AND (%(after)s::text IS NULL OR agent_id > %(after)s)"
                    " ORDER BY agent_id LIMIT %(limit)s"
                ).format(columns=_COLUMNS),
                {"id": agent_id, "after": after, "limit": limit},
            )
            return [AgentRecord(*row) for row in await cursor.fetchall()]

        return await self._reads.run(select)
