"""Consuming batch messages: validate, group, store, then acknowledge to the broker."""

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from psycopg import DataError, IntegrityError
from psycopg import Error as DatabaseError

from collector.batches import Batch, BatchDecoder, TimeWindow, UnknownDictionary, check_size
from collector.config import IngestSettings
from collector.metrics import CollectorMetrics
from collector.store import DeadLetter, ReadingStore, WriteOutcome
from shared.acks import Refusal, Rejection, encode_ack
from shared.cancellation import raise_if_cancelled
from shared.errors import MqttError, WireError
from shared.mqtt import Message
from shared.readings import datetime_to_us
from shared.wire import Topics, batch_identity

log = logging.getLogger(__name__)
_T = TypeVar("_T")


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
        """Record one status message of an agent; raise WireError if it is not one."""
        ...


class _Refused(Exception):
    """The database refused a batch for good (not an outage): it is quarantined alone."""


@dataclass(slots=True)
class _Group:
    messages: list[Message]
    batches: list[Batch]
    readings: int
    started: float


@dataclass(slots=True)
class _Written:
    outcome: WriteOutcome
    refused: list[tuple[Batch, str]]
    """Batches the database refused for good, with its error."""


@dataclass(slots=True)
class _Write:
    group: _Group
    task: asyncio.Future[_Written]


class Consumer:
    """Groups batches from many messages into one write; acks each message after its commit.

    Up to `concurrent_writes` groups are written at once while the next one fills, so
    decoding overlaps the database's work. A message that cannot be ingested is quarantined
    in dead_letters and acknowledged, so one bad payload never blocks the stream; readings
    that fail their own checks are refused one by one and the rest of their batch is stored.
    A write that fails because the database is unreachable is retried until it succeeds,
    without acknowledging anything, so a slow or absent database pushes back on the broker; a
    group the database refuses for good is written batch by batch, and a batch it still
    refuses is quarantined alone.
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
        on_result: StatusHandler | None = None,
    ) -> None:
        self._source = source
        self._store = store
        # Small JSON messages handled one by one: status messages, and commands' results.
        self._handlers: dict[str, StatusHandler] = {}
        if on_status is not None:
            self._handlers.update(state=on_status, heartbeat=on_status)
        if on_result is not None:
            self._handlers["result"] = on_result
        self._topics = topics
        self._settings = settings
        self._metrics = metrics
        self._group = _Group([], [], 0, 0.0)
        self._writes: deque[_Write] = deque()
        self._decoder = batch_decoder(settings)
        self._acks: set[asyncio.Future[None]] = set()
        # (agent, hash) of the version 3 dictionaries known to be in PostgreSQL.
        self._saved: set[tuple[str, str]] = set()

    async def run(self) -> None:
        """Consume until cancelled."""
        stream = self._source.messages()
        pending: asyncio.Task[Message] | None = None
        try:
            while True:
                raise_if_cancelled()
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
        except Exception:
            # Crashing: the supervisor restarts this consumer on the same connection. Release
            # what it held, or the broker would wait for those PUBACKs forever and stop
            # sending; the agents still have every batch and send again if not acknowledged.
            self._release_held()
            raise
        finally:
            if pending is not None:
                pending.cancel()
            for write in self._writes:
                write.task.cancel()
            for ack in self._acks:
                ack.cancel()

    def _release_held(self) -> None:
        held = [m for w in self._writes for m in w.group.messages] + self._group.messages
        for message in held:
            self._source.ack(message)
        self._writes.clear()
        self._group = _Group([], [], 0, 0.0)

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
        try:
            agent = self._topics.agent_of(message.topic)
            if kind == "batch":
                limit = self._settings.max_payload_bytes
            elif kind in self._handlers:
                limit = self._settings.max_status_bytes
            else:
                raise WireError(f"no {kind!r} messages are expected here", reason="topic")
            check_size(message.payload, limit)
            if kind != "batch":
                await self._status(agent, kind, message)
                return
            batch = await self._decode(message, agent)
        except UnknownDictionary as exc:
            self._ask_for_dictionary(message, exc)
            return
        except WireError as exc:
            await self._quarantine(message, str(exc), exc.reason)
            return
        if batch.dictionary and (batch.agent, batch.dictionary) not in self._saved:
            try:
                await self._retrying(
                    "save a tag dictionary",
                    lambda: self._store.save_dictionary(
                        batch.agent, batch.dictionary, batch.tags.raw, len(batch.tags.refs)
                    ),
                )
            except _Refused as exc:
                await self._quarantine(message, str(exc), "store")
                return
            self._saved.add((batch.agent, batch.dictionary))
        self._hold(message, batch)

    async def _decode(self, message: Message, agent: str) -> Batch:
        """Decode a batch; a dictionary it names but this collector lacks is looked up first."""
        try:
            return self._decoder.decode(message.payload, agent, message.topic)
        except UnknownDictionary as exc:
            # Another replica, or this one before a restart, may have kept it.
            if not await self._decoder.resolve(exc, self._load_dictionary):
                raise
            self._saved.add((exc.agent, exc.hash))
        return self._decoder.decode(message.payload, agent, message.topic)

    async def _load_dictionary(self, agent: str, dict_hash: str) -> bytes | None:
        return await self._retrying(
            "load a tag dictionary", lambda: self._store.load_dictionary(agent, dict_hash)
        )

    def _ask_for_dictionary(self, message: Message, missing: UnknownDictionary) -> None:
        """Store nothing of a batch whose dictionary is unknown; ask its agent to send it along."""
        log.info(
            "agent %s named tag dictionary %s, unknown here: asking for batch %d again",
            missing.agent,
            missing.hash,
            missing.batch_id,
        )
        self._metrics.messages.labels(outcome="dictionary").inc()
        ack = self._ack(missing.epoch, [], [], [], dictionary=[missing.batch_id])
        self._acknowledge(missing.agent, ack)
        self._hold(message, None)

    async def _status(self, agent: str, kind: str, message: Message) -> None:
        """Record a status message; one the database refuses for good is quarantined."""
        handler = self._handlers[kind]
        try:
            await self._retrying(
                "store a status message", lambda: handler(agent, kind, message.payload)
            )
        except _Refused as exc:
            await self._quarantine(message, str(exc), "store")
            return
        self._hold(message, None)

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run a database operation, retrying while the database is unreachable.

        Raises _Refused if the database rejects the data itself (a data or integrity error):
        retrying that would stop ingest for good. Any other error (an outage, or a fault of
        the collector or its schema) is retried: the agents keep the data meanwhile.
        """
        failing = False
        while True:
            try:
                result = await operation()
                break
            except DatabaseError as exc:
                raise_if_cancelled(exc)
                self._metrics.write_errors.inc()
                if isinstance(exc, DataError | IntegrityError):
                    raise _Refused(f"{exc.__class__.__name__}: {exc}") from exc
                if not failing:
                    log.error("cannot %s: %s; retrying", what, exc)
                    failing = True
                await asyncio.sleep(self._settings.retry_interval)
        if failing:
            log.info("database writes resumed")
        return result

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

    async def _quarantine(
        self, message: Message, error: str, reason: str, *, hold: bool = True
    ) -> None:
        """Keep a message as a dead letter, tell its agent, and (with `hold`) ack it in turn."""
        log.warning("quarantined a message on %s: %s", message.topic, error)
        identity = _batch_identity(self._topics, message)
        letter = DeadLetter(
            message.topic,
            message.payload,
            error,
            reason,
            kind=self._topics.kind_of(message.topic),
            agent=_topic_agent(self._topics, message),
            epoch=identity[1] if identity else None,
            batch_id=identity[2] if identity else None,
            readings=identity[3] if identity else 0,
        )
        try:
            await self._retrying("write to dead_letters", lambda: self._store.quarantine(letter))
        except _Refused as exc:
            # Not even kept as a dead letter: say so loudly, the agent still has the batch.
            log.error("could not keep the message from %s: %s", message.topic, exc)
            self._metrics.messages.labels(outcome="lost").inc()
            if hold:
                self._hold(message, None)
            return
        self._metrics.dead_letters.labels(reason=reason).inc()
        self._metrics.messages.labels(outcome="quarantined").inc()
        if identity is not None:
            agent, epoch, batch_id, _ = identity
            rejection = Rejection(batch=batch_id, error=error, reason=reason)
            self._acknowledge(agent, self._ack(epoch, [], [rejection], []))
        if hold:
            self._hold(message, None)

    def _ack(
        self,
        epoch: int,
        stored: list[int],
        rejected: list[Rejection],
        refused: list[Refusal],
        *,
        dictionary: list[int] | None = None,
    ) -> bytes:
        return encode_ack(
            epoch,
            stored,
            rejected,
            refused,
            dictionary=dictionary,
            version=self._settings.ack_version,
        )

    async def _flush(self) -> None:
        """Start writing the current group, once fewer than `concurrent_writes` are running."""
        group, self._group = self._group, _Group([], [], 0, 0.0)
        while len(self._writes) >= self._settings.concurrent_writes:
            await self._finish_written(wait=True)
        task: asyncio.Future[_Written]
        if group.batches:
            task = asyncio.ensure_future(self._write(group.batches))
        else:
            task = asyncio.get_running_loop().create_future()
            task.set_result(_Written(WriteOutcome(0, 0, 0), []))
        self._writes.append(_Write(group, task))

    async def _write(self, batches: list[Batch]) -> _Written:
        """Write a group, retrying while the database is away; isolate batches it refuses."""
        started = time.perf_counter()
        try:
            outcome = await self._retrying(
                "write to the database", lambda: self._store.write(batches)
            )
        except _Refused as exc:
            if len(batches) == 1:
                return _Written(WriteOutcome(0, 0, 0), [(batches[0], str(exc))])
            log.warning("the database refused a group (%s); writing its batches one by one", exc)
            return await self._write_each(batches)
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        return _Written(outcome, [])

    async def _write_each(self, batches: list[Batch]) -> _Written:
        total = WriteOutcome(0, 0, 0, {})
        refused: list[tuple[Batch, str]] = []
        for batch in batches:
            written = await self._write([batch])
            refused += written.refused
            one = written.outcome
            total = WriteOutcome(
                total.batches_stored + one.batches_stored,
                total.batches_duplicate + one.batches_duplicate,
                total.readings_stored + one.readings_stored,
                dict(Counter(total.refused) + Counter(one.refused)),
            )
        return _Written(total, refused)

    async def _finish_written(self, *, wait: bool) -> None:
        """Acknowledge committed groups in the order they arrived (MQTT wants PUBACKs in order).

        With `wait`, first wait for the oldest write to commit.
        """
        while self._writes and (wait or self._writes[0].task.done()):
            wait = False
            write = self._writes[0]
            written = await write.task
            outcome = written.outcome
            self._metrics.readings_stored.inc(outcome.readings_stored)
            self._metrics.messages.labels(outcome="stored").inc(outcome.batches_stored)
            self._metrics.messages.labels(outcome="duplicate").inc(outcome.batches_duplicate)
            for reason, count in outcome.refused.items():
                self._metrics.refused_readings.labels(reason=reason).inc(count)
            failed = {id(batch) for batch, _ in written.refused}
            for batch, error in written.refused:
                # The original message is in this group and is acknowledged with it below.
                message = Message(batch.topic, batch.raw, 1, 0, False)
                error = f"the database refused it: {error}"
                await self._quarantine(message, error, "store", hold=False)
            # Duplicates are acknowledged too: they are stored, from an earlier send.
            stored: dict[tuple[str, int], list[Batch]] = {}
            now_us = time.time_ns() // 1000
            for batch in write.group.batches:
                if id(batch) not in failed:
                    stored.setdefault((batch.agent, batch.epoch), []).append(batch)
                    if len(batch):
                        # A device clock ahead of ours counts as no lag, not a negative one.
                        lag_us = max(0, now_us - int(batch.ts.max()))
                        self._metrics.ingest_lag.observe(lag_us / 1e6)
            for (agent, epoch), batches in stored.items():
                refusals = [
                    Refusal(batch=b.batch_id, readings=b.refused.counts())
                    for b in batches
                    if b.refused is not None
                ]
                self._acknowledge(
                    agent, self._ack(epoch, [b.batch_id for b in batches], [], refusals)
                )
            self._writes.popleft()
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


def batch_decoder(settings: IngestSettings) -> BatchDecoder:
    """A decoder refusing readings outside the configured timestamp window.

    A compressed batch may inflate to no more than an uncompressed batch may be long.
    """
    oldest, newest = settings.oldest_timestamp, settings.newest_timestamp
    return BatchDecoder(
        window=TimeWindow(datetime_to_us(oldest), datetime_to_us(newest)),
        max_inflated_bytes=settings.max_payload_bytes,
    )


def _topic_agent(topics: Topics, message: Message) -> str | None:
    """The agent a message's topic names, if it names a valid one."""
    try:
        return topics.agent_of(message.topic)
    except WireError:
        return None


def _batch_identity(topics: Topics, message: Message) -> tuple[str, int, int, int] | None:
    """(agent, epoch, batch id, readings) of a rejected batch, if it says them plainly enough."""
    if topics.kind_of(message.topic) != "batch":
        return None
    agent = _topic_agent(topics, message)
    identity = batch_identity(message.payload)
    return identity if identity is not None and identity[0] == agent else None
