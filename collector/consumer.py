"""Consuming batch messages: validate, group, store, then acknowledge to the broker."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from psycopg import Error as DatabaseError

from collector.batches import Batch, decode_batch
from collector.config import IngestSettings
from collector.metrics import CollectorMetrics
from collector.store import ReadingStore
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


class Consumer:
    """Groups batches from many messages into one write; acks each message after its commit.

    A message that cannot be ingested is quarantined in dead_letters and acknowledged, so one
    bad payload never blocks the stream. A failed write is retried until it succeeds, without
    acknowledging anything, so a slow or absent database pushes back on the broker.
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

    async def run(self) -> None:
        """Consume until cancelled."""
        stream = self._source.messages()
        pending: asyncio.Task[Message] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(stream))
                timeout = None
                if self._group.messages:
                    waited = time.monotonic() - self._group.started
                    timeout = max(0.0, self._settings.group_max_delay - waited)
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if done:
                    message = pending.result()
                    pending = None
                    await self._take(message)
                if self._group.messages and (
                    not done
                    or self._group.readings >= self._settings.group_max_readings
                    or time.monotonic() - self._group.started >= self._settings.group_max_delay
                ):
                    await self._flush()
        finally:
            if pending is not None:
                pending.cancel()

    async def _take(self, message: Message) -> None:
        kind = self._topics.kind_of(message.topic)
        if kind != "batch" and self._on_status is not None:
            try:
                agent = self._topics.agent_of(message.topic)
            except WireError as exc:
                await self._quarantine(message, str(exc), exc.reason)
                return
            await self._on_status(agent, kind, message.payload)
            self._source.ack(message)
            return
        try:
            if len(message.payload) > self._settings.max_payload_bytes:
                raise WireError(
                    f"payload of {len(message.payload)} bytes exceeds"
                    f" {self._settings.max_payload_bytes}",
                    reason="too_large",
                )
            agent = self._topics.agent_of(message.topic)
            batch = decode_batch(message.payload, agent)
        except WireError as exc:
            await self._quarantine(message, str(exc), exc.reason)
            return
        if not self._group.messages:
            self._group.started = time.monotonic()
        self._group.messages.append(message)
        self._group.batches.append(batch)
        self._group.readings += len(batch)

    async def _quarantine(self, message: Message, error: str, reason: str) -> None:
        log.warning("quarantined a message on %s: %s", message.topic, error)
        while True:
            try:
                await self._store.quarantine(message.topic, message.payload, error)
                break
            except DatabaseError:
                self._metrics.write_errors.inc()
                log.exception("cannot write to dead_letters; retrying")
                await asyncio.sleep(self._settings.retry_interval)
        self._metrics.dead_letters.labels(reason=reason).inc()
        self._metrics.messages.labels(outcome="quarantined").inc()
        rejected = _batch_identity(self._topics, message)
        if rejected is not None:
            agent, epoch, batch_id = rejected
            await self._send_ack(
                agent, encode_ack(epoch, [], [Rejection(batch=batch_id, error=error)])
            )
        self._source.ack(message)

    async def _flush(self) -> None:
        group, self._group = self._group, _Group([], [], 0, 0.0)
        failing = False
        while True:
            started = time.perf_counter()
            try:
                outcome = await self._store.write(group.batches)
                break
            except DatabaseError as exc:
                self._metrics.write_errors.inc()
                if not failing:
                    log.error("cannot write to the database: %s; retrying", exc)
                    failing = True
                await asyncio.sleep(self._settings.retry_interval)
        if failing:
            log.info("database writes resumed")
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        self._metrics.readings_stored.inc(outcome.readings_stored)
        self._metrics.messages.labels(outcome="stored").inc(outcome.batches_stored)
        self._metrics.messages.labels(outcome="duplicate").inc(outcome.batches_duplicate)
        # Duplicates are acknowledged too: they are stored, from an earlier send.
        stored: dict[tuple[str, int], list[int]] = {}
        for batch in group.batches:
            stored.setdefault((batch.agent, batch.epoch), []).append(batch.batch_id)
        await asyncio.gather(
            *(
                self._send_ack(agent, encode_ack(epoch, ids))
                for (agent, epoch), ids in stored.items()
            )
        )
        for message in group.messages:
            self._source.ack(message)

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


def _batch_identity(topics: Topics, message: Message) -> tuple[str, int, int] | None:
    """(agent, epoch, batch id) of a rejected payload, if it says them plainly enough."""
    try:
        agent = topics.agent_of(message.topic)
    except WireError:
        return None
    identity = batch_identity(message.payload)
    return identity if identity is not None and identity[0] == agent else None
