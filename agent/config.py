"""The agent's configuration file, validated strictly."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from protocols.modbus.config import ModbusDevice, shared_endpoint_problems
from protocols.opcua.config import OpcUaDevice
from shared.config import Duration, LogLevel, StrictModel, load_config, require_unique
from shared.mqtt import MqttSettings
from shared.wire import AgentId

Device = Annotated[ModbusDevice | OpcUaDevice, Field(discriminator="type")]

ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "PLANTWIRE_AGENT_ID": ("agent", "id"),
    "PLANTWIRE_MQTT_URL": ("mqtt", "url"),
    "PLANTWIRE_MQTT_USERNAME": ("mqtt", "username"),
    "PLANTWIRE_MQTT_PASSWORD": ("mqtt", "password"),
    "PLANTWIRE_BUFFER_PATH": ("buffer", "path"),
    "PLANTWIRE_HTTP_HOST": ("agent", "http_host"),
}
"""Environment variables that replace a key of the file, for secrets and per-host values."""


class AgentIdentity(StrictModel):
    """Who this agent is."""

    id: AgentId = Field(description="Agent id: letters, digits, '.', '_' or '-'; unique per site.")
    log_level: LogLevel = Field(
        default="INFO", description="Least severe messages logged: DEBUG, INFO, WARNING or ERROR."
    )
    heartbeat_interval: Duration = Field(
        default=10.0, gt=0, description="Time between heartbeats to the collector."
    )
    align_polls: bool = Field(
        default=True,
        description="Poll devices on whole seconds of the wall clock (on multiples of a"
        " shorter poll_interval), all together: one wake-up per tick for all of them, and"
        " timestamps that line up across devices. false: each device at a random phase.",
    )
    poll_jitter: Duration = Field(
        default=0.0,
        ge=0,
        description="With align_polls, delay each device by a random part of this (at most"
        " its interval) to spread a burst of requests, for example over a slow serial line.",
    )
    http_host: str = Field(default="127.0.0.1", description="Address of /metrics and /healthz.")
    http_port: int | None = Field(
        default=9108, ge=0, le=65535, description="Port of /metrics and /healthz (null: off)."
    )


class BufferSettings(StrictModel):
    """Where readings wait until the collector has them, and how much may wait."""

    path: Path = Field(description="SQLite file of the store-and-forward buffer.")
    max_bytes: int | None = Field(
        default=1024**3, ge=1_000_000, description="Most bytes of pages in use (null: no cap)."
    )
    max_readings: int | None = Field(
        default=None, ge=1, description="Most readings held (null: no cap by count)."
    )
    commit_interval: Duration = Field(
        default=0.25,
        ge=0,
        le=5,
        description="Polls arriving this soon after a commit wait to be committed together:"
        " one disk sync for all of them. Longer saves CPU and disk wear; a power cut loses"
        " at most this much of polling.",
    )
    when_full: Literal["drop_oldest", "drop_newest", "block"] = Field(
        default="drop_oldest",
        description="drop_oldest: delete the oldest unsent readings; drop_newest: refuse new"
        " ones; block: pause polling until there is room. Drops are counted and reported.",
    )


class ForwardSettings(StrictModel):
    """How buffered readings are sent."""

    batch_max_readings: int = Field(
        default=10_000, ge=1, le=100_000, description="Most readings in one MQTT message."
    )
    publish_timeout: Duration = Field(default=10.0, gt=0, description="Wait for the broker's ack.")
    ack_timeout: Duration = Field(
        default=30.0, gt=0, description="Send a batch again if the collector has not confirmed it."
    )
    window: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Most batches awaiting confirmation: enough to keep the link busy while"
        " a loaded agent takes longer to handle each acknowledgement.",
    )
    retry_interval: Duration = Field(default=2.0, gt=0, description="Pause after a failed send.")
    linger: Duration = Field(
        default=0.05, ge=0, description="Wait this long after new data, to send fuller batches."
    )
    wire_version: Literal[2, 3] = Field(
        default=3,
        description="Batch format: 3 (blocks, dictionary by hash), or 2 for collectors older"
        " than version 3 support; upgrade collectors first.",
    )
    compression: Literal["zlib", "none"] = Field(
        default="zlib", description="Compress version 3 batches (dictionary and body)."
    )


class CommandRule(StrictModel):
    """One entry of the allow-list: which tags commands may write, and within what."""

    device: str = Field(
        min_length=1, description="Device name, or a pattern with * and ? (fnmatch)."
    )
    tag: str = Field(min_length=1, description="Tag name, or a pattern with * and ? (fnmatch).")
    min: float | None = Field(
        default=None, description="Least value a command may write here (with the tag's own min)."
    )
    max: float | None = Field(
        default=None, description="Greatest value a command may write here (with the tag's max)."
    )


class CommandSettings(StrictModel):
    """Commands to equipment from the collector (docs/protocol.md, Commands)."""

    enabled: bool = Field(
        default=False, description="Apply commands at all; when off, each is refused with why."
    )
    allow: list[CommandRule] = Field(
        default_factory=list,
        description="Device/tag pairs commands may write (the first matching entry applies);"
        " the tag must also be writable: true. Empty: none.",
    )
    max_age: Duration = Field(
        default=300.0,
        gt=0,
        description="Refuse (as expired) a command asked for longer ago than this, whatever"
        " expiry it carries: nothing is applied late after an outage.",
    )
    connect_wait: Duration = Field(
        default=10.0,
        ge=0,
        description="A command to a device that is not connected (the agent just started, or"
        " the device is reconnecting) waits this long, never past its expiry, before it is"
        " answered unreachable. Commands are applied one at a time, so others wait too.",
    )
    retention: Duration = Field(
        default=7 * 86400.0,
        gt=0,
        description="Finished commands are remembered this long, so a redelivered one is"
        " answered with its first result instead of being written again.",
    )
    path: Path | None = Field(
        default=None,
        description="SQLite file of finished commands (null: the buffer file's path with"
        " .commands appended).",
    )


class AgentConfig(StrictModel):
    """Everything plantwire-agent needs to run."""

    agent: AgentIdentity = Field(description="Identity and logging.")
    buffer: BufferSettings = Field(description="The store-and-forward buffer.")
    mqtt: MqttSettings = Field(description="The broker batches are published to.")
    forward: ForwardSettings = Field(
        default_factory=ForwardSettings, description="Batching and retries."
    )
    devices: list[Device] = Field(min_length=1, description="Devices this agent polls.")
    commands: CommandSettings = Field(
        default_factory=CommandSettings,
        description="Writes to equipment asked for through the collector (off by default).",
    )

    @model_validator(mode="after")
    def _unique_devices(self) -> "AgentConfig":
        require_unique((device.name for device in self.devices), "device names")
        if problems := shared_endpoint_problems(self.devices):
            raise ValueError("; ".join(problems))
        return self


def load_agent_config(path: Path) -> AgentConfig:
    """Load and validate an agent configuration file."""
    return load_config(path, AgentConfig, ENV_OVERRIDES)
