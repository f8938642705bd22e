"""Commands to equipment: writes asked for on the `cmd` topic, applied within this agent's rules.

The agent's configuration decides, never the request: a command is applied only when
`commands.enabled` is on, its device and tag match an entry of `commands.allow` (whose bounds
it must fit), the tag is `writable` within its own min and max, it has not expired and is not
older than `commands.max_age`. The value is read before and after the write. Each finished
command's result is kept in a small SQLite file before it is published, so a redelivered
command is answered with its first result and never written twice, and a result made while
the broker is away is published when it is back (after a restart too).
"""

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TypeVar
from uuid import UUID

from agent.config import CommandRule, CommandSettings
from agent.forwarder import Publisher
from protocols.base import DeviceState, DeviceUnreachable, Source, SourceError
from shared.clock import Clock
from shared.commands import (
    AgentOutcome,
    CommandPayload,
    CommandResult,
    decode_command,
    encode_result,
)
from shared.errors import MqttError, WireError
from shared.readings import Value, us_to_datetime
from shared.wire import Topics

log = logging.getLogger(__name__)
_T = TypeVar("_T")
CONNECT_CHECK_S = 0.1
"""How often a command waiting for its device looks whether it is connected yet."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command is not applied, before anything is sent to its device."""

    status: AgentOutcome
    reason: str


def decide(settings: CommandSettings, command: CommandPayload, now: datetime) -> Refusal | None:
    """Refuse a command this agent's rules do not allow; None: go ahead (the driver checks more)."""
    if now >= command.expires_at:
        return Refusal("expired", f"expired at {command.expires_at.isoformat()}")
    age = (now - command.requested_at).total_seconds()
    if age > settings.max_age:
        return Refusal(
            "expired", f"asked for {age:.0f}s ago, more than commands.max_age {settings.max_age:g}s"
        )
    if not settings.enabled:
        return Refusal("refused", "commands are disabled on this agent (commands.enabled)")
    where = f"{command.device}/{command.tag}"
    for index, rule in enumerate(settings.allow):
        if fnmatchcase(command.device, rule.device) and fnmatchcase(command.tag, rule.tag):
            return _outside(rule, index, where, command.value)
    return Refusal("refused", f"{where} matches no entry of commands.allow")


def _outside(rule: CommandRule, index: int, where: str, value: Value) -> Refusal | None:
    """Refuse a value outside an allow-list entry's bounds."""
    if rule.min is None and rule.max is None:
        return None
    entry = f"commands.allow[{index}]"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Refusal("refused", f"{where}: {value!r} is not a number ({entry} has bounds)")
    if rule.min is not None and value < rule.min:
        return Refusal("refused", f"{where}: {value!r} is below {entry}.min {rule.min:g}")
    if rule.max is not None and value > rule.max:
        return Refusal("refused", f"{where}: {value!r} is above {entry}.max {rule.max:g}")
    return None


class CommandLog:
    """Finished commands in a SQLite file: each result, and whether the broker has it yet."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commands")

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._db())

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS finished (id TEXT PRIMARY KEY, result BLOB NOT NULL,"
                " finished_us INTEGER NOT NULL, published INTEGER NOT NULL DEFAULT 0)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS finished_at ON finished (finished_us)")
            self._conn = conn
        return self._conn

    async def open(self) -> None:
        """Create or open the file."""
        await self._run(lambda conn: None)

    async def close(self) -> None:
        """Close the file."""
        if self._conn is not None:
            await self._run(lambda conn: conn.close())
            self._conn = None
        self._executor.shutdown(wait=True)

    async def result(self, command_id: UUID) -> bytes | None:
        """The result a command finished with, if it did; it is published again."""

        def find(conn: sqlite3.Connection) -> bytes | None:
            # No RETURNING: SQLite has it from 3.35, and edge boxes may have older ones.
            key = (str(command_id),)
            row = conn.execute("SELECT result FROM finished WHERE id = ?", key).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE finished SET published = 0 WHERE id = ?", key)
            return bytes(row[0])

        return await self._run(find)

    async def record(
        self, command_id: UUID, result: bytes, finished_us: int, keep_s: float
    ) -> None:
        """Keep a finished command's result, to be published; forget those older than `keep_s`."""

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.execute(
                    "INSERT OR REPLACE INTO finished (id, result, finished_us) VALUES (?, ?, ?)",
                    (str(command_id), result, finished_us),
                )
                conn.execute(
                    "DELETE FROM finished WHERE finished_us < ? AND published = 1",
                    (finished_us - int(keep_s * 1e6),),
                )

        await self._run(write)

    async def unpublished(self) -> list[tuple[str, bytes]]:
        """Results the broker has not acknowledged yet, oldest first."""

        def find(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = conn.execute(
                "SELECT id, result FROM finished WHERE published = 0 ORDER BY finished_us"
            ).fetchall()
            return [(str(row[0]), bytes(row[1])) for row in rows]

        return await self._run(find)

    async def published(self, command_id: str) -> None:
        """Note that the broker acknowledged a result."""
        await self._run(
            lambda conn: conn.execute(
                "UPDATE finished SET published = 1 WHERE id = ?", (command_id,)
            )
        )


class Commands:
    """Takes commands off the `cmd` topic, applies them one at a time, publishes each result.

    Polling goes on meanwhile: each driver puts a command's requests in turn with its polls.
    `counts` has the results by status; `duplicates` the commands delivered again after
    they finished (answered with their first result).
    """

    def __init__(
        self,
        settings: CommandSettings,
        sources: Mapping[str, Source],
        log_file: CommandLog,
        publisher: Publisher,
        *,
        agent_id: str,
        topics: Topics,
        clock: Clock,
        publish_timeout: float,
        retry_interval: float,
    ) -> None:
        self._settings = settings
        self._sources = sources
        self._log = log_file
        self._publisher = publisher
        self._agent_id = agent_id
        self._topics = topics
        self._clock = clock
        self._publish_timeout = publish_timeout
        self._retry_interval = retry_interval
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._results = asyncio.Event()
        self._results.set()  # results left unpublished by the last run go first
        self._failing = False
        self.counts: Counter[str] = Counter()
        self.duplicates = 0

    def handles(self, topic: str) -> bool:
        """Whether a topic is one of this agent's command topics."""
        head, _, command_id = topic.rpartition("/")
        return bool(command_id) and f"{head}/+" == self._topics.commands(self._agent_id)

    def receive(self, topic: str, payload: bytes) -> None:
        """Queue a command message; it is applied in turn."""
        self._queue.put_nowait((topic, payload))

    async def run(self) -> None:
        """Apply queued commands, one at a time, until cancelled."""
        while True:
            topic, payload = await self._queue.get()
            await self._apply_message(topic, payload)

    async def _apply_message(self, topic: str, payload: bytes) -> None:
        try:
            command = decode_command(payload)
        except WireError as exc:
            await self._invalid(topic, str(exc))
            return
        if str(command.id) != topic.rpartition("/")[2]:
            await self._finish(command.id, "refused", "the command's id differs from its topic")
            return
        if await self._log.result(command.id) is not None:
            self.duplicates += 1
            log.info("command %s delivered again: answering with its result", command.id)
            self._results.set()
            return
        await self._apply(command)

    async def _invalid(self, topic: str, error: str) -> None:
        """Refuse a message that is not a command, if its topic names an id to answer to."""
        try:
            command_id = UUID(topic.rpartition("/")[2])
        except ValueError:
            log.error("ignored a message on %s: %s", topic, error)
            return
        if await self._log.result(command_id) is None:
            await self._finish(command_id, "refused", error)
        else:
            self._results.set()

    async def _apply(self, command: CommandPayload) -> None:
        now = us_to_datetime(self._clock.time_us())
        refusal = decide(self._settings, command, now)
        if refusal is not None:
            await self._finish(command.id, refusal.status, refusal.reason)
            return
        where = f"{command.device}/{command.tag}"
        source = self._sources.get(command.device)
        if source is None:
            await self._finish(command.id, "refused", f"{where}: no such device on this agent")
            return
        if source.state is not DeviceState.CONNECTED:
            await self._wait_connected(source, command)
            refusal = decide(self._settings, command, us_to_datetime(self._clock.time_us()))
            if refusal is not None:
                await self._finish(command.id, refusal.status, refusal.reason)
                return
        before: Value | None = None
        try:
            before = await source.read_tag(command.tag)
            await source.write(command.tag, command.value)
        except DeviceUnreachable as exc:
            await self._finish(command.id, "unreachable", str(exc), before)
            return
        except SourceError as exc:  # WriteRefused, WriteFailed (the device said no), no such tag
            await self._finish(command.id, "refused", str(exc), before)
            return
        log.info(
            "command %s from %s: %s = %r", command.id, command.requested_by, where, command.value
        )
        try:
            after = await source.read_tag(command.tag)
        except SourceError as exc:
            await self._finish(
                command.id, "applied", f"written; the value after could not be read: {exc}", before
            )
            return
        await self._finish(command.id, "applied", None, before, after)

    async def _wait_connected(self, source: Source, command: CommandPayload) -> None:
        """Give the device's poller time to connect it, up to connect_wait and the expiry."""
        now = us_to_datetime(self._clock.time_us())
        left = min(self._settings.connect_wait, (command.expires_at - now).total_seconds())
        deadline = self._clock.monotonic() + left
        while source.state is not DeviceState.CONNECTED and self._clock.monotonic() < deadline:
            await self._clock.sleep(CONNECT_CHECK_S)

    async def _finish(
        self,
        command_id: UUID,
        status: AgentOutcome,
        reason: str | None,
        before: Value | None = None,
        after: Value | None = None,
    ) -> None:
        """Keep the result, then have it published."""
        if status != "applied":
            log.warning("command %s %s: %s", command_id, status, reason)
        now_us = self._clock.time_us()
        result = CommandResult(
            v=1,
            id=command_id,
            status=status,
            reason=reason,
            value_before=before,
            value_after=after,
            finished_at=us_to_datetime(now_us),
        )
        await self._log.record(command_id, encode_result(result), now_us, self._settings.retention)
        self.counts[status] += 1
        self._results.set()

    async def publish_results(self) -> None:
        """Publish kept results until the broker has each, retrying while it is away."""
        topic = self._topics.result(self._agent_id)
        while True:
            await self._results.wait()
            self._results.clear()
            for command_id, payload in await self._log.unpublished():
                if not await self._send(topic, payload):
                    self._results.set()
                    await asyncio.sleep(self._retry_interval)
                    break
                await self._log.published(command_id)

    async def _send(self, topic: str, payload: bytes) -> bool:
        if not await self._publisher.wait_connected(self._retry_interval):
            return False
        try:
            await self._publisher.publish(topic, payload, qos=1, timeout=self._publish_timeout)
        except MqttError as exc:
            if not self._failing:
                log.error("cannot publish command results: %s; keeping them", exc)
                self._failing = True
            return False
        if self._failing:
            log.info("publishing command results again")
            self._failing = False
        return True


def default_log_path(buffer_path: Path) -> Path:
    """Where finished commands are kept when the configuration does not say."""
    return buffer_path.with_name(buffer_path.name + ".commands")
