"""Sending buffered readings to the broker in batches, oldest first."""

import asyncio
import contextlib
import logging
from typing import Protocol

from agent.buffer import Buffer
from agent.config import ForwardSettings
from shared.errors import MqttError
from shared.wire import Topics, encode_batch

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the forwarder needs of an MQTT client."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
    ) -> None:
        """Publish and wait for the broker's acknowledgement."""
        ...


class Forwarder:
    """Moves batches from the buffer to the broker; a batch leaves the buffer only once acked."""

    def __init__(
        self,
        buffer: Buffer,
        publisher: Publisher,
        *,
        agent_id: str,
        topics: Topics,
        settings: ForwardSettings,
    ) -> None:
        self._buffer = buffer
        self._publisher = publisher
        self._agent_id = agent_id
        self._topic = topics.batch(agent_id)
        self._settings = settings
        self.batches_sent = 0
        self.readings_sent = 0
        self.send_failures = 0

    async def run(self) -> None:
        """Forward until cancelled."""
        data = self._buffer.wait_for_data()
        failing = False
        while True:
            if not self._publisher.connected:
                # Publishing now would only queue copies in the client; wait for the broker.
                await asyncio.sleep(self._settings.retry_interval)
                continue
            # Clear before looking, so readings added after the look still wake us.
            data.clear()
            batch = await self._buffer.begin(self._settings.batch_max_readings)
            if batch is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(data.wait(), timeout=1.0)
                if self._settings.linger:
                    await asyncio.sleep(self._settings.linger)
                continue
            payload = encode_batch(self._agent_id, self._buffer.epoch, batch.seqs, batch.readings)
            try:
                await self._publisher.publish(
                    self._topic, payload, qos=1, timeout=self._settings.publish_timeout
                )
            except MqttError as exc:
                await self._buffer.end(batch, accepted=False)
                self.send_failures += 1
                if not failing:
                    log.error("cannot forward batches: %s; keeping them buffered", exc)
                    failing = True
                await asyncio.sleep(self._settings.retry_interval)
                continue
            await self._buffer.end(batch, accepted=True)
            if failing:
                log.info("forwarding resumed")
                failing = False
            self.batches_sent += 1
            self.readings_sent += len(batch.seqs)
