"""Sending buffered readings to the collector, and deleting them only once it has them.

A batch is published at QoS 1 and stays in the buffer until the collector acknowledges that
it committed it (the `ack` topic), not merely when the broker took it. At most `window`
batches are in flight; one not acknowledged within `ack_timeout` is sent again, unchanged, and
the collector stores it at most once.

The collector's acknowledgement comes in two versions: v1 lists stored and rejected batches;
v2 adds a reason to each rejection and the readings it refused from batches it otherwise
stored. Both are accepted, and refused readings are counted by reason (`unknown` when a v1
acknowledgement gives none). While the buffer cannot be read or written, forwarding waits.
"""

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from agent.buffer import Buffer, BufferUnavailable, PendingBatch
from agent.config import ForwardSettings
from shared.acks import AckPayload, decode_ack
from shared.clock import Clock
from shared.errors import MqttError, WireError
from shared.wire import Topics, encode_batch
from shared.wire_v3 import encode_batch_v3

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the forwarder needs of an MQTT client."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the broker connection; return whether it is up."""
        ...

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
    ) -> None:
        """Publish and wait for the broker's acknowledgement."""
        ...


@dataclass(slots=True)
class _InFlight:
    batch: PendingBatch
    payload: bytes
    sent_at: float
    sends: int = 0
    dictionary: str | None = None  # hash of the tag dictionary a version 3 batch names
    carries_dictionary: bool = False


class Forwarder:
    """Moves batches from the buffer to the broker, in order, with a bounded window."""

    def __init__(
        self,
        buffer: Buffer,
        publisher: Publisher,
        *,
        agent_id: str,
        topics: Topics,
        settings: ForwardSettings,
        clock: Clock,
    ) -> None:
        self._buffer = buffer
        self._publisher = publisher
        self._agent_id = agent_id
        self._topic = topics.batch(agent_id)
        self._settings = settings
        self._clock = clock
        self._in_flight: dict[int, _InFlight] = {}
        self._known_dictionaries: set[str] = set()  # the collector has confirmed these
        self._acked = asyncio.Event()
        self._failing = False
        self.batches_sent = 0
        self.readings_sent = 0
        self.readings_acknowledged = 0
        self.resends = 0
        self.send_failures = 0
        self.rejected_batches = 0
        self.rejected_readings: Counter[str] = Counter()
        self.dictionaries_sent = 0
        self.dictionary_requests = 0

    async def run(self) -> None:
        """Forward until cancelled."""
        data = self._buffer.wait_for_data()
        settings = self._settings
        while True:
            if not self._publisher.connected:
                # Publishing now would only queue copies in the client; wait for the broker,
                # and go on the moment it answers rather than after a fixed pause.
                await self._publisher.wait_connected(settings.retry_interval)
                continue
            now = self._clock.monotonic()
            overdue = [
                f for f in self._in_flight.values() if now - f.sent_at >= settings.ack_timeout
            ]
            if overdue:
                for flight in sorted(overdue, key=lambda f: f.batch.batch_id):
                    await self._send(flight)
                continue
            if len(self._in_flight) >= settings.window:
                oldest = min(f.sent_at for f in self._in_flight.values())
                await self._wait(self._acked, settings.ack_timeout - (now - oldest))
                continue
            # Clear before looking, so readings added after the look still wake us.
            data.clear()
            try:
                batch = await self._buffer.begin(settings.batch_max_readings)
            except BufferUnavailable:
                # The buffer logs and reports this state itself; try again shortly.
                await asyncio.sleep(settings.retry_interval)
                continue
            if batch is None:
                await self._wait(data, 1.0)
                if settings.linger:
                    await asyncio.sleep(settings.linger)
                continue
            flight = self._encode(_InFlight(batch, b"", sent_at=now))
            self._in_flight[batch.batch_id] = flight
            await self._send(flight)

    def _encode(self, flight: _InFlight, *, with_dictionary: bool = False) -> _InFlight:
        """Build a batch's payload; a version 3 one carries the dictionary if not yet known."""
        batch, epoch = flight.batch, self._buffer.epoch
        if self._settings.wire_version == 2:
            flight.payload = encode_batch(self._agent_id, epoch, batch.seqs, batch.readings)
            return flight
        dictionary = self._buffer.dictionary(batch.tag_count)
        inline = with_dictionary or dictionary.hash not in self._known_dictionaries
        flight.payload = encode_batch_v3(
            self._agent_id,
            epoch,
            batch.blocks,
            dict_hash=dictionary.hash,
            dictionary=dictionary.raw if inline else None,
            compress=self._settings.compression == "zlib",
        )
        flight.dictionary, flight.carries_dictionary = dictionary.hash, inline
        self.dictionaries_sent += inline
        return flight

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        event.clear()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
        # arrives together with the event, and the forwarder would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await event.wait()

    async def _send(self, flight: _InFlight) -> None:
        try:
            await self._publisher.publish(
                self._topic, flight.payload, qos=1, timeout=self._settings.publish_timeout
            )
        except MqttError as exc:
            self.send_failures += 1
            if not self._failing:
                log.error("cannot forward batches: %s; keeping them buffered", exc)
                self._failing = True
            # Try this batch again after retry_interval rather than a whole ack_timeout.
            flight.sent_at = (
                self._clock.monotonic() - self._settings.ack_timeout + self._settings.retry_interval
            )
            await asyncio.sleep(self._settings.retry_interval)
            return
        if self._failing:
            log.info("forwarding resumed")
            self._failing = False
        flight.sent_at = self._clock.monotonic()
        flight.sends += 1
        if flight.sends == 1:
            self.batches_sent += 1
            self.readings_sent += flight.batch.count
        else:
            self.resends += 1

    async def handle_ack(self, raw: bytes) -> None:
        """Delete the batches the collector says it has; log and count what it refused."""
        try:
            ack = decode_ack(raw)
        except WireError as exc:
            log.error("ignored an acknowledgement: %s", exc)
            return
        if ack.epoch != self._buffer.epoch:
            log.warning("ignored an acknowledgement for buffer epoch %d", ack.epoch)
            return
        for batch_id in ack.dictionary:
            self._resend_with_dictionary(batch_id)
        for batch_id in [*ack.stored, *(r.batch for r in ack.rejected)]:
            flight = self._in_flight.pop(batch_id, None)
            if flight is not None and flight.carries_dictionary and flight.dictionary:
                self._known_dictionaries.add(flight.dictionary)
            try:
                deleted = await self._buffer.acknowledge(batch_id)
            except BufferUnavailable:
                # Still buffered, and no longer in flight: it is sent again, the collector
                # acknowledges it again (storing it once), and the delete is retried then.
                continue
            self.readings_acknowledged += deleted
            if deleted:
                # Reported when the batch leaves the buffer, so a repeated ack counts nothing.
                self._report_refusals(ack, batch_id, deleted)
        self._acked.set()

    def _resend_with_dictionary(self, batch_id: int) -> None:
        """The collector lacks a batch's dictionary: send the batch again, now carrying it."""
        flight = self._in_flight.get(batch_id)
        if flight is None:
            return
        self.dictionary_requests += 1
        if flight.dictionary is not None:
            self._known_dictionaries.discard(flight.dictionary)
        log.info("the collector asks for the tag dictionary of batch %d; sending it", batch_id)
        self._encode(flight, with_dictionary=True)
        flight.sent_at = float("-inf")  # overdue: the loop sends it next

    def _report_refusals(self, ack: AckPayload, batch_id: int, readings: int) -> None:
        """Count and log what the collector refused of one batch: all of it, or some readings."""
        for rejection in ack.rejected:
            if rejection.batch == batch_id:
                self.rejected_batches += 1
                self.rejected_readings[rejection.reason or "unknown"] += readings
                log.error(
                    "the collector rejected batch %d (kept in its dead letters): %s%s",
                    batch_id,
                    rejection.error,
                    f" ({rejection.reason})" if rejection.reason else "",
                )
        for refusal in ack.refused:
            if refusal.batch == batch_id:
                self.rejected_readings.update(refusal.readings)
                log.warning(
                    "the collector refused %d readings of batch %d (kept in its dead letters): %s",
                    sum(refusal.readings.values()),
                    batch_id,
                    ", ".join(f"{n} {reason}" for reason, n in sorted(refusal.readings.items())),
                )
