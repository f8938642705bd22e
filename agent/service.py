"""The running agent: buffer, MQTT link, one poller per device and the forwarder.

The pollers, the forwarder, the acknowledgement receiver and the heartbeat run under one
supervisor: a task that crashes is logged, counted and restarted with backoff, and reported
by /healthz and the heartbeat while it keeps failing.
"""

import asyncio
import logging

from agent.buffer import BLOCK_MAX_READINGS, SqliteBuffer
from agent.commands import CommandLog, Commands, default_log_path
from agent.config import AgentConfig, Device
from agent.forwarder import Forwarder
from agent.health import HealthReporter, config_hash
from agent.http import AgentHttp
from agent.poller import DevicePoller
from agent.report import ExceptionFilter
from agent.sources import build_sources
from shared.clock import Clock, SystemClock
from shared.mqtt import MqttClient
from shared.supervisor import Supervisor
from shared.wire import Topics

log = logging.getLogger(__name__)


def exception_filter(device: Device, clock: Clock) -> ExceptionFilter | None:
    """The device's report-by-exception filter, if it has report_by_exception on."""
    if not device.report_by_exception:
        return None
    deadbands = {
        tag.name: tag.deadband
        for tag in device.tags
        if getattr(tag, "deadband_type", "absolute") == "absolute"
    }
    return ExceptionFilter(deadbands, device.heartbeat, clock)


STOP_GRACE_S = 10.0


class AgentService:
    """Wires the agent's parts together and runs them until stopped.

    `stop_grace` bounds `stop()` in seconds, whatever state the devices, the broker and the
    buffer are in; `supervisor` tunes the task supervisor (tests shorten its backoff).
    """

    def __init__(
        self,
        config: AgentConfig,
        clock: Clock | None = None,
        *,
        stop_grace: float = STOP_GRACE_S,
        supervisor: Supervisor | None = None,
    ) -> None:
        # What runs later needs the agent's settings, not its devices: those live on in their
        # sources, Modbus tags as compact points, so the tag models can go (about 7 MB at
        # 10,000 tags) once the caller lets go of `config` too.
        self.config = config.model_copy(update={"devices": []})
        self.stop_grace = stop_grace
        self.clock = clock or SystemClock()
        agent_id = config.agent.id
        self.buffer = SqliteBuffer(
            config.buffer.path,
            max_readings=config.buffer.max_readings,
            max_bytes=config.buffer.max_bytes,
            when_full=config.buffer.when_full,
            commit_interval=config.buffer.commit_interval,
            block_max_readings=min(BLOCK_MAX_READINGS, config.forward.batch_max_readings),
        )
        sources = build_sources(config.devices, self.clock)
        self.pollers = [
            DevicePoller(
                source,
                self.buffer.add,
                interval=device.poll_interval,
                clock=self.clock,
                report=exception_filter(device, self.clock),
                align=config.agent.align_polls,
                jitter=config.agent.poll_jitter,
            )
            for device, source in zip(config.devices, sources, strict=True)
        ]
        self.topics = Topics(config.mqtt.topic_prefix)
        # A persistent session: commands sent while the agent is away wait in the broker.
        self.mqtt = MqttClient(
            config.mqtt,
            client_id=config.mqtt.client_id or f"plantwire-agent-{agent_id}",
            persistent_session=True,
        )
        self.command_log = CommandLog(config.commands.path or default_log_path(config.buffer.path))
        self.commands = Commands(
            config.commands,
            {device.name: source for device, source in zip(config.devices, sources, strict=True)},
            self.command_log,
            self.mqtt,
            agent_id=agent_id,
            topics=self.topics,
            clock=self.clock,
            publish_timeout=config.forward.publish_timeout,
            retry_interval=config.forward.retry_interval,
        )
        self.forwarder = Forwarder(
            self.buffer,
            self.mqtt,
            agent_id=agent_id,
            topics=self.topics,
            settings=config.forward,
            clock=self.clock,
        )
        self.health = HealthReporter(
            agent_id=agent_id,
            config_hash=config_hash(config),
            devices=[device.name for device in config.devices],
            pollers=self.pollers,
            buffer=self.buffer,
            forwarder=self.forwarder,
            topics=self.topics,
            clock=self.clock,
            interval=config.agent.heartbeat_interval,
            tasks=lambda: self.supervisor.health(),
            commands=self.commands,
        )
        self.mqtt.set_will(self.health.will())
        self.http = AgentHttp(
            lambda: self.health.snapshot(self.mqtt.connected), config.buffer.max_bytes
        )
        self.supervisor = supervisor or Supervisor("agent")
        self.supervisor.add("acks", self._receive)
        for device, poller in zip(config.devices, self.pollers, strict=True):
            self.supervisor.add(f"poll-{device.name}", poller.run)
        self.supervisor.add("forwarder", self.forwarder.run)
        self.supervisor.add("commands", self.commands.run)
        self.supervisor.add("command-results", self.commands.publish_results)
        self.supervisor.add("heartbeat", lambda: self.health.run(self.mqtt))
        self._running = False

    async def start(self) -> None:
        """Open the buffer, start connecting to the broker, start polling and forwarding."""
        await self.buffer.open()
        await self.command_log.open()
        self._running = True
        identity = self.config.agent
        if identity.http_port is not None:
            await self.http.start(identity.http_host, identity.http_port)
        self.mqtt.keep_subscribed(self.topics.ack(identity.id))
        self.mqtt.keep_subscribed(self.topics.commands(identity.id))
        self.mqtt.start()
        self.supervisor.start()
        log.info(
            "agent %s started: %d devices, buffer %s (epoch %d)%s",
            identity.id,
            len(self.pollers),
            self.config.buffer.path,
            self.buffer.epoch,
            f", /metrics on {identity.http_host}:{self.http.port}"
            if identity.http_port is not None
            else "",
        )

    async def _receive(self) -> None:
        async for message in self.mqtt.messages():
            if self.commands.handles(message.topic):
                self.commands.receive(message.topic, message.payload)
            elif self.topics.kind_of(message.topic) == "ack":
                await self.forwarder.handle_ack(message.payload)

    async def stop(self, grace: float | None = None) -> None:
        """Stop polling and forwarding within `grace` s (default `stop_grace`).

        What is buffered stays buffered for the next start. Half the grace goes to the tasks
        (a write already begun is finished), then the goodbye, the MQTT link and the file.
        """
        if not self._running:
            return
        self._running = False
        loop = asyncio.get_running_loop()
        grace = self.stop_grace if grace is None else grace
        deadline = loop.time() + grace
        await self.supervisor.stop(timeout=grace / 2)
        await self.health.say_goodbye(self.mqtt, timeout=max(0.1, (deadline - loop.time()) / 3))
        await self.http.stop()
        await self.mqtt.close(timeout=max(0.1, deadline - loop.time() - 0.5))
        await self.buffer.close()
        await self.command_log.close()
        log.info("agent %s stopped", self.config.agent.id)
