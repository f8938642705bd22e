"""The agent's health: birth/death and heartbeats over MQTT, and a snapshot for /metrics."""

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from agent import __version__
from agent.buffer import Buffer, BufferCondition, BufferStats
from agent.commands import Commands
from agent.config import AgentConfig
from agent.forwarder import Forwarder
from agent.overload import OverloadWatch
from agent.poller import DevicePoller
from shared.agent_status import BufferHealth, HeartbeatPayload, StatePayload
from shared.clock import Clock
from shared.errors import MqttError
from shared.mqtt import MqttClient, Will
from shared.supervisor import TaskHealth, TaskState
from shared.wire import Topics

log = logging.getLogger(__name__)


def config_hash(config: AgentConfig) -> str:
    """SHA-256 of the configuration's JSON (`model_dump_json()`), which birth messages carry."""
    digest = hashlib.sha256()
    _feed_json(digest.update, config)
    return digest.hexdigest()


def _feed_json(feed: Callable[[bytes], object], model: BaseModel) -> None:
    """Feed the model's JSON, as model_dump_json writes it, in pieces: a list of models one
    model at a time (10,000 tags' JSON in one piece raised the agent's start-up peak ~4 MB)."""
    streamed = {
        name
        for name, value in model
        if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value)
    }
    if not streamed:
        feed(model.model_dump_json().encode())
        return
    separator = b"{"
    for name in type(model).model_fields:
        # `{"name":value}`, with a streamed list left empty; `{}` for a field never dumped.
        only: dict[str, set[int]] | set[str] = {name: set()} if name in streamed else {name}
        field = model.model_dump_json(include=only).encode()[1:-1]
        if not field:
            continue
        feed(separator)
        separator = b","
        if name not in streamed:
            feed(field)
            continue
        feed(field[:-1])  # `"name":[`
        for index, item in enumerate(getattr(model, name)):
            if index:
                feed(b",")
            _feed_json(feed, item)
        feed(b"]")
    feed(b"}")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the agent reports about itself at one moment."""

    connected: bool
    buffer: BufferStats
    oldest_age_s: float | None
    devices: dict[str, str]
    polls: dict[str, int]
    polls_skipped: dict[str, int]
    overloaded: bool
    readings_polled: dict[str, int]
    suppressed: dict[str, int]
    handed: dict[str, int]
    batches_sent: int
    readings_sent: int
    readings_acknowledged: int
    resends: int
    send_failures: int
    rejected_batches: int
    rejected_readings: dict[str, int]
    buffer_condition: BufferCondition
    tasks: list[TaskHealth]
    commands: dict[str, int] = field(default_factory=dict)
    """Commands finished, by status."""
    command_duplicates: int = 0

    @property
    def failing_tasks(self) -> list[str]:
        """Names of the tasks that crashed and keep failing."""
        return [task.name for task in self.tasks if task.state is TaskState.FAILING]


class HealthReporter:
    """Publishes birth on every connect, heartbeats on an interval, and death on a clean stop."""

    def __init__(
        self,
        *,
        agent_id: str,
        config_hash: str,
        devices: list[str],
        pollers: list[DevicePoller],
        buffer: Buffer,
        forwarder: Forwarder,
        topics: Topics,
        clock: Clock,
        interval: float,
        tasks: Callable[[], list[TaskHealth]] = list,
        commands: Commands | None = None,
    ) -> None:
        self._agent_id = agent_id
        self._config_hash = config_hash
        self._devices = devices
        self._pollers = pollers
        self._buffer = buffer
        self._forwarder = forwarder
        self._topics = topics
        self._clock = clock
        self._overload = OverloadWatch(pollers, clock)
        self._interval = interval
        self._tasks = tasks
        self._commands = commands
        self.heartbeats_sent = 0

    def state(self, status: Literal["online", "offline"]) -> bytes:
        """A birth (online) or death (offline) message."""
        return (
            StatePayload(
                v=1,
                status=status,
                version=__version__,
                config_hash=self._config_hash,
                devices=self._devices,
                epoch=self._buffer.epoch,
            )
            .model_dump_json()
            .encode()
        )

    def will(self) -> Will:
        """The last will: the broker marks the agent offline if it vanishes."""
        # The epoch is not known before the buffer opens; 0 stands for "see the birth".
        payload = (
            StatePayload(
                v=1,
                status="offline",
                version=__version__,
                config_hash=self._config_hash,
                devices=self._devices,
                epoch=0,
            )
            .model_dump_json()
            .encode()
        )
        return Will(self._topics.state(self._agent_id), payload, qos=1, retain=True)

    async def snapshot(self, connected: bool) -> Snapshot:
        """The agent's current figures."""
        stats = await self._buffer.stats()
        oldest = None
        if stats.oldest_ts_us is not None:
            oldest = max(0.0, (self._clock.time_us() - stats.oldest_ts_us) / 1e6)
        forwarder = self._forwarder
        pollers = list(zip(self._devices, self._pollers, strict=True))
        return Snapshot(
            connected=connected,
            buffer=stats,
            oldest_age_s=oldest,
            devices={n: p.state.value for n, p in pollers},
            polls={n: p.polls for n, p in pollers},
            polls_skipped={n: p.skipped for n, p in pollers},
            overloaded=self._overload.check(),
            readings_polled={n: p.readings for n, p in pollers},
            suppressed={n: p.suppressed for n, p in pollers},
            handed={n: p.handed for n, p in pollers},
            batches_sent=forwarder.batches_sent,
            readings_sent=forwarder.readings_sent,
            readings_acknowledged=forwarder.readings_acknowledged,
            resends=forwarder.resends,
            send_failures=forwarder.send_failures,
            rejected_batches=forwarder.rejected_batches,
            rejected_readings=dict(forwarder.rejected_readings),
            buffer_condition=self._buffer.condition(),
            tasks=self._tasks(),
            commands=dict(self._commands.counts) if self._commands else {},
            command_duplicates=self._commands.duplicates if self._commands else 0,
        )

    def heartbeat(self, snapshot: Snapshot) -> bytes:
        """A heartbeat message from a snapshot."""
        stats = snapshot.buffer
        condition = snapshot.buffer_condition
        return (
            HeartbeatPayload(
                v=1,
                ts=self._clock.time_us(),
                buffer=BufferHealth(
                    readings=stats.readings,
                    oldest_age_s=snapshot.oldest_age_s,
                    in_flight=stats.batches_in_flight,
                    dropped_oldest=stats.dropped_oldest,
                    dropped_newest=stats.dropped_newest,
                    used_bytes=stats.used_bytes,
                    state=condition.state,
                    error=condition.last_error,
                ),
                devices=snapshot.devices,
                readings_acknowledged=snapshot.readings_acknowledged,
                failing_tasks=snapshot.failing_tasks,
            )
            .model_dump_json()
            .encode()
        )

    async def run(self, mqtt: MqttClient) -> None:
        """Send birth after each (re)connect and a heartbeat every interval, until cancelled."""
        was_connected = False
        next_beat = self._clock.monotonic()
        while True:
            connected = mqtt.connected
            try:
                if connected and not was_connected:
                    await mqtt.publish(
                        self._topics.state(self._agent_id),
                        self.state("online"),
                        qos=1,
                        retain=True,
                        timeout=10,
                    )
                if connected and self._clock.monotonic() >= next_beat:
                    payload = self.heartbeat(await self.snapshot(connected))
                    await mqtt.publish(
                        self._topics.heartbeat(self._agent_id), payload, qos=1, timeout=10
                    )
                    self.heartbeats_sent += 1
                    next_beat = self._clock.monotonic() + self._interval
                was_connected = connected
            except MqttError as exc:
                log.debug("health message not sent: %s", exc)
                was_connected = False
            self._overload.check()
            await asyncio.sleep(min(0.5, self._interval))

    async def say_goodbye(self, mqtt: MqttClient, timeout: float = 5.0) -> None:
        """Publish offline on a clean stop (a clean disconnect does not fire the will)."""
        if mqtt.connected:
            try:
                await mqtt.publish(
                    self._topics.state(self._agent_id),
                    self.state("offline"),
                    qos=1,
                    retain=True,
                    timeout=timeout,
                )
            except MqttError as exc:
                log.warning("could not publish offline state: %s", exc)
