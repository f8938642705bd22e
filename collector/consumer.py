"""Consuming batch messages: validate, group, store, then acknowledge to the broker."""

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg import Error as DatabaseError

from collector.batches import Batch, BatchDecoder
from collector.config import IngestSettings
from collector.metrics import CollectorMetrics
from collector.store import ReadingStore, WriteOutcome
from shared.acks import Rejection, encode_ack
from shared.errors import MqttError, WireError
from shared.mqtt import Message
from shared.wire import Topics, batch_identity

log = logging.getLogger(__name__)


class MessageSource(Protocol):
    """What the consumer needs of an MQTT client."""

    def messages(self) -> AsyncIterator[Message]:
        """Received messages, in order."""
        ...

    def ack(self, message: Message) -> None:
        """Acknowledge a message to the broker."""
        ...

    def backlog(self) -> int:
        """Messages received and waiting to be taken."""
        ...

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
    ) -> None:
        """Publish a message and wait for the broker's acknowledgement."""
        ...


class StatusHandler(Protocol):
    """Receives agents' birth, death and heartbeat messages."""

    async def __call__(self, agent: str, kind: str, payload: bytes) -> None:
        """Record one status message of an agent."""
        ...


@dataclass(slots=True)
class _Group:
    messages: list[Message]
    batches: list[Batch]
    readings: int
    started: float


@dataclass(slots=True)
class _Write:
    group: _Group
    task: asyncio.Future[WriteOutcome]


class Consumer:
    """Groups batches from many messages into one write; acks each message after its commit.

    Up to `concurrent_writes` groups are written at once while the next one fills, so
    decoding overlaps the database's work. A message that cannot be ingested is quarantined
    in dead_letters and acknowledged, so one bad payload never blocks the stream. A failed
    write is retried until it succeeds, without acknowledging anything, so a slow or absent
    database pushes back on the broker.
    """

    def __init__(
        self,
        source: MessageSource,
        store: ReadingStore,
        *,
        topics: Topics,
        settings: IngestSettings,
        metrics: CollectorMetrics,
        on_status: StatusHandler | None = None,
    ) -> None:
        self._source = source
        self._store = store
        self._on_status = on_status
        self._topics = topics
        self._settings = settings
        self._metrics = metrics
        self._group = _Group([], [], 0, 0.0)
        self._writes: deque[_Write] = deque()
        self._decoder = BatchDecoder()
        self._acks: set[asyncio.Future[None]] = set()

    async def run(self) -> None:
        """Consume until cancelled."""
        stream = self._source.messages()
        pending: asyncio.Task[Message] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(stream))
                waits: set[asyncio.Future[Any]] = {pending}
                if self._writes:
                    waits.add(self._writes[0].task)
                done, _ = await asyncio.wait(
                    waits, timeout=self._wait_limit(), return_when=asyncio.FIRST_COMPLETED
                )
                await self._finish_written(wait=False)
                if pending in done:
                    message = pending.result()
                    pending = None
                    await self._take(message)
                    if self._group.readings >= self._settings.group_max_readings:
                        await self._flush()
                elif self._group_ready():
                    await self._flush()
        finally:
            if pending is not None:
                pending.cancel()
            for write in self._writes:
                write.task.cancel()
            for ack in self._acks:
                ack.cancel()

    def _lingered(self) -> float:
        """Seconds the current group has still to wait for company (0: none)."""
        waited = time.monotonic() - self._group.started
        return max(0.0, self._settings.group_max_delay - waited)

    def _wait_limit(self) -> float | None:
        """How long to wait for a message or a commit before looking at the group again."""
        if not self._group.messages or len(self._writes) >= self._settings.concurrent_writes:
            return None  # nothing to write, or nowhere to write it: a commit will wake us
        if self._source.backlog():
            return 0.0  # take what is already here first
        return self._lingered()

    def _group_ready(self) -> bool:
        """Write the group now: a write slot is free, nothing else is waiting, linger is over.

        Groups are therefore as small as the database allows: while every slot is busy,
        batches keep joining the next group, which grows with the load.
        """
        return (
            bool(self._group.messages)
            and len(self._writes) < self._settings.concurrent_writes
            and not self._source.backlog()
            and self._lingered() == 0.0
        )

    async def _take(self, message: Message) -> None:
        kind = self._topics.kind_of(message.topic)
        if kind != "batch" and self._on_status is not None:
            try:
                agent = self._topics.agent_of(message.topic)
            except WireError as exc:
                await self._quarantine(message, str(exc), exc.reason)
                return
            await self._on_status(agent, kind, message.payload)
            self._hold(message, None)
            return
        try:
            if len(message.payload) > self._settings.max_payload_bytes:
                raise WireError(
                    f"payload of {len(message.payload)} bytes exceeds"
                    f" {self._settings.max_payload_bytes}",
                    reason="too_large",
                )
            agent = self._topics.agent_of(message.topic)
            batch = self._decoder.decode(message.payload, agent)
        except WireError as exc:
            await self._quarantine(message, str(exc), exc.reason)
            return
        self._hold(message, batch)

    def _hold(self, message: Message, batch: Batch | None) -> None:
        """Add a message to the current group: acknowledged to the broker after its write.

        Messages with nothing to write ride along, so the broker hears of every message in the
        order it sent them.
        """
        if not self._writes and not self._group.messages and batch is None:
            self._source.ack(message)
            return
        if not self._group.messages:
            self._group.started = time.monotonic()
        self._group.messages.append(message)
        if batch is not None:
            self._group.batches.append(batch)
            self._group.readings += len(batch)

    async def _quarantine(self, message: Message, error: str, reason: str) -> None:
        log.warning("quarantined a message on %s: %s", message.topic, error)
        while True:
            try:
                await self._store.quarantine(message.topic, message.payload, error)
                break
            except DatabaseError as exc:
                _reraise_cancellation(exc)
                self._metrics.write_errors.inc()
                log.exception("cannot write to dead_letters; retrying")
                await asyncio.sleep(self._settings.retry_interval)
        self._metrics.dead_letters.labels(reason=reason).inc()
        self._metrics.messages.labels(outcome="quarantined").inc()
        rejected = _batch_identity(self._topics, message)
        if rejected is not None:
            agent, epoch, batch_id = rejected
            self._acknowledge(
                agent, encode_ack(epoch, [], [Rejection(batch=batch_id, error=error)])
            )
        self._hold(message, None)

    async def _flush(self) -> None:
        """Start writing the current group, once fewer than `concurrent_writes` are running."""
        group, self._group = self._group, _Group([], [], 0, 0.0)
        while len(self._writes) >= self._settings.concurrent_writes:
            await self._finish_written(wait=True)
        task: asyncio.Future[WriteOutcome]
        if group.batches:
            task = asyncio.ensure_future(self._write(group.batches))
        else:
            task = asyncio.get_running_loop().create_future()
            task.set_result(WriteOutcome(0, 0, 0))
        self._writes.append(_Write(group, task))

    async def _write(self, batches: list[Batch]) -> WriteOutcome:
        """Write a group, retrying until the database takes it."""
        failing = False
        while True:
            started = time.perf_counter()
            try:
                outcome = await self._store.write(batches)
                break
            except DatabaseError as exc:
                _reraise_cancellation(exc)
                self._metrics.write_errors.inc()
                if not failing:
                    log.error("cannot write to the database: %s; retrying", exc)
                    failing = True
                await asyncio.sleep(self._settings.retry_interval)
        if failing:
            log.info("database writes resumed")
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        return outcome

    async def _finish_written(self, *, wait: bool) -> None:
        """Acknowledge committed groups in the order they arrived (MQTT wants PUBACKs in order).

        With `wait`, first wait for the oldest write to commit.
        """
        while self._writes and (wait or self._writes[0].task.done()):
            wait = False
            write = self._writes.popleft()
            outcome = await write.task
            self._metrics.readings_stored.inc(outcome.readings_stored)
            self._metrics.messages.labels(outcome="stored").inc(outcome.batches_stored)
            self._metrics.messages.labels(outcome="duplicate").inc(outcome.batches_duplicate)
            # Duplicates are acknowledged too: they are stored, from an earlier send.
            stored: dict[tuple[str, int], list[int]] = {}
            for batch in write.group.batches:
                stored.setdefault((batch.agent, batch.epoch), []).append(batch.batch_id)
            for (agent, epoch), ids in stored.items():
                self._acknowledge(agent, encode_ack(epoch, ids))
            for message in write.group.messages:
                self._source.ack(message)

    def _acknowledge(self, agent: str, payload: bytes) -> None:
        """Send an acknowledgement to an agent without holding up ingest for the broker's reply.

        Waiting here could deadlock: the broker's PUBACK may sit behind messages that paho
        cannot hand over until this loop takes them.
        """
        task = asyncio.ensure_future(self._send_ack(agent, payload))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _send_ack(self, agent: str, payload: bytes) -> None:
        try:
            await self._source.publish(
                self._topics.ack(agent), payload, qos=1, timeout=self._settings.ack_timeout
            )
        except MqttError as exc:
            # The agent sends the batch again after its own timeout; it is then acknowledged
            # as a duplicate. Nothing is lost, only time.
            self._metrics.ack_failures.inc()
            log.warning("could not acknowledge to agent %s: %s", agent, exc)


def _reraise_cancellation(exc: DatabaseError) -> None:
    """Raise CancelledError if this task is being cancelled.

    A cancelled query can surface as a database error (the server confirms the cancel); a
    retry loop that took it for an outage would never let the task end.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def _batch_identity(topics: Topics, message: Message) -> tuple[str, int, int] | None:
    """(agent, epoch, batch id) of a rejected payload, if it says them plainly enough."""
    try:
        agent = topics.agent_of(message.topic)
    except WireError:
        return None
    identity = batch_identity(message.payload)
    return identity if identity is not None and identity[0] == agent else None
