"""The collector's configuration file, validated strictly."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from limits import parse
from pydantic import AfterValidator, AwareDatetime, Field, PrivateAttr, SecretStr, model_validator

from collector.analytics.equipment import Plant, load_plant
from shared.acks import AckVersion
from shared.config import Duration, LogLevel, StrictModel, load_config
from shared.mqtt import MqttSettings

ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "PLANTWIRE_DATABASE_URL": ("database", "url"),
    "PLANTWIRE_DATABASE_READ_URL": ("database", "read_url"),
    "PLANTWIRE_MQTT_URL": ("mqtt", "url"),
    "PLANTWIRE_MQTT_USERNAME": ("mqtt", "username"),
    "PLANTWIRE_MQTT_PASSWORD": ("mqtt", "password"),
    "PLANTWIRE_HTTP_HOST": ("http", "host"),
    "PLANTWIRE_HTTP_PORT": ("http", "port"),
    "PLANTWIRE_REDIS_URL": ("rate_limits", "redis_url"),
}
"""Environment variables that replace a key of the file, for secrets and per-host values."""


class DatabaseSettings(StrictModel):
    """The PostgreSQL database readings are stored in."""

    url: SecretStr = Field(description="libpq URL, postgresql://user:password@host:port/dbname.")
    read_url: SecretStr | None = Field(
        default=None,
        description="libpq URL of a streaming replica for the API's reads (null: the primary)."
        " Reads fall back to the primary while it is unreachable.",
    )
    pool_size: int = Field(default=4, ge=1, le=100, description="Most connections the pool opens.")
    connect_timeout: Duration = Field(default=30.0, gt=0, description="Wait for the database.")
    migrate_on_start: bool = Field(default=True, description="Apply migrations at start-up.")
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Drop daily partitions of readings older than this (null: keep all).",
    )
    batch_ledger_days: int = Field(
        default=30,
        ge=1,
        description="Remember stored batch ids this long, to recognise resends (must exceed"
        " the longest outage an agent buffers through).",
    )
    partition_days_ahead: int = Field(
        default=7, ge=1, le=366, description="Daily partitions kept created ahead of today."
    )
    partition_days_back: int = Field(
        default=400,
        ge=1,
        le=36600,
        description="A reading of a day up to this many days ago gets its day's partition,"
        " created when it arrives; older (or later than `partition_days_ahead`) readings are"
        " kept in readings_default until this window covers their day.",
    )
    dead_letter_days: int | None = Field(
        default=30,
        ge=1,
        description="Delete dead letters received longer ago than this (null: keep all).",
    )


class HttpSettings(StrictModel):
    """Where the API listens."""

    @model_validator(mode="after")
    def _two_ports(self) -> "HttpSettings":
        if self.ops_port is not None and self.ops_port == self.port:
            raise ValueError("ops_port must differ from port")
        return self

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port (0: any free port).")
    max_readings: int = Field(
        default=100_000, ge=1, description="Most readings one API response returns."
    )
    ops_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve /healthz, /readyz and /metrics on this port only, on the same host"
        " (null: on `port`, beside the API).",
    )
    max_query_bytes: int = Field(
        default=4096, ge=256, le=65536, description="Longer query strings are refused (414)."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins whose browser pages may call the API, e.g."
        " https://dashboard.example.com (empty: no cross-origin access).",
    )


class SeriesSettings(StrictModel):
    """Limits of /api/v1/series: a request beyond one is refused (422), never cut short."""

    max_range_days: int = Field(
        default=400, ge=1, description="Longest range (`to` - `from`) one request covers, in days."
    )
    max_buckets: int = Field(default=10_000, ge=1, description="Most buckets one request makes.")
    max_points: int = Field(
        default=10_000, ge=5, description="Largest `max_points` a chart may ask for."
    )
    max_page: int = Field(
        default=10_000, ge=1, description="Most raw readings on one page (`limit`)."
    )
    max_downsampled_readings: int = Field(
        default=1_000_000,
        ge=1,
        description="Most raw readings `max_points` downsamples without `interval`.",
    )


class IngestSettings(StrictModel):
    """How batches are consumed and written."""

    shared_group: str | None = Field(
        default="plantwire-collectors",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="MQTT shared subscription group: collectors in one group split the"
        " stream between them (null: every collector gets every message).",
    )
    group_max_readings: int = Field(
        default=50_000, ge=1, description="Readings from many messages written in one COPY."
    )
    group_max_delay: Duration = Field(
        default=0.0,
        ge=0,
        description="Longest a batch waits for others to join its write while a write slot is"
        " free (0: write as soon as nothing else is waiting; while every slot is busy, batches"
        " keep joining the next write regardless).",
    )
    concurrent_writes: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Groups written at once, each on its own database connection (broker"
        " acknowledgements still go in arrival order).",
    )
    max_payload_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Larger payloads are quarantined."
    )
    max_status_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Larger state and heartbeat messages are quarantined.",
    )
    oldest_timestamp: AwareDatetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="Readings timestamped before this are refused (each kept as a dead letter).",
    )
    newest_timestamp: AwareDatetime = Field(
        default=datetime(2100, 1, 1, tzinfo=UTC),
        description="Readings timestamped at or after this are refused likewise.",
    )
    ack_version: AckVersion = Field(
        default=2,
        description="Acknowledgement version sent to agents: 2 says which readings were"
        " refused; 1 while agents older than this release remain (docs/protocol.md).",
    )
    retry_interval: Duration = Field(default=1.0, gt=0, description="Pause after a failed write.")
    ack_timeout: Duration = Field(
        default=10.0, gt=0, description="Wait for the broker to take an acknowledgement."
    )

    @model_validator(mode="after")
    def _window(self) -> "IngestSettings":
        if self.oldest_timestamp >= self.newest_timestamp:
            raise ValueError("oldest_timestamp must be earlier than newest_timestamp")
        return self


def _limit(value: str) -> str:
    try:
        parse(value)
    except ValueError:
        raise ValueError(
            f"expected a rate such as 600/minute or 20/second, got {value!r}"
        ) from None
    return value


Rate = Annotated[str, AfterValidator(_limit)]


class RateLimitSettings(StrictModel):
    """Requests each API key may make, by its role; shared across replicas through Redis."""

    enabled: bool = Field(default=True, description="Count requests and refuse excess (429).")
    viewer: Rate = Field(default="1200/minute", description="Limit of a viewer key.")
    operator: Rate = Field(default="1200/minute", description="Limit of an operator key.")
    admin: Rate = Field(default="2400/minute", description="Limit of an admin key.")
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://host:port/db shared by every replica (null: each replica counts"
        " on its own).",
    )
    redis_timeout: Duration = Field(
        default=0.25, gt=0, description="Longest wait for Redis before counting in-process."
    )
    redis_retry: Duration = Field(
        default=5.0, gt=0, description="After Redis failed, count in-process this long."
    )

    @model_validator(mode="after")
    def _redis_scheme(self) -> "RateLimitSettings":
        url = self.redis_url.get_secret_value() if self.redis_url is not None else None
        if url is not None and not url.startswith(("redis://", "rediss://")):
            raise ValueError("redis_url: expected redis://host:port/db or rediss://...")
        return self


class AgentSettings(StrictModel):
    """How agents' liveness is judged."""

    offline_after: Duration = Field(
        default=60.0,
        gt=0,
        description="An agent silent this long is marked offline, even without its last will.",
    )


class EquipmentSettings(StrictModel):
    """The equipment model (docs/equipment.md)."""

    file: Path | None = Field(
        default=None,
        description="YAML file of the equipment model, read at start-up: the sites it names are"
        " made equal to it and only it may change them (null: the API manages every site).",
    )
    status_interval: Duration = Field(
        default=10.0,
        gt=0,
        description="How often the equipment_status gauge reads each machine's state tag.",
    )
    _plant: Plant | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self) -> "EquipmentSettings":
        if self.file is not None:
            self._plant = load_plant(self.file)
        return self

    @property
    def plant(self) -> Plant | None:
        """The file's model (None: no file)."""
        return self._plant


class AnalyticsSettings(StrictModel):
    """What is derived from readings as they arrive (docs/analytics.md)."""

    derive: bool = Field(
        default=True,
        description="Keep rollups, machine state intervals and counts up to date as readings"
        " arrive (false: no derived data; series read raw readings and KPIs have nothing).",
    )
    derive_interval: Duration = Field(
        default=1.0, gt=0, description="How often the deriver takes up newly written readings."
    )
    rollup_interval: Duration = Field(
        default=5.0,
        gt=0,
        description="While batches keep coming without a pause (a backlog being loaded), the"
        " longest readings due to be rolled up wait (larger parts cost less per reading; series"
        " read them raw meanwhile). At a pause they are rolled up at once.",
    )
    derive_max_log_rows: int = Field(
        default=2000,
        ge=1,
        description="Most logged writes one pass of the deriver takes up (one transaction).",
    )
    max_groups: int = Field(
        default=2000, ge=1, description="Most groups (`group_by`) one KPI request may ask for."
    )


class StreamSettings(StrictModel):
    """The live event stream, /api/v1/stream (docs/stream.md)."""

    retention: Duration = Field(
        default=24 * 3600.0,
        gt=0,
        description="Events are kept this long (up to an hour more: maintenance runs hourly);"
        " a client resuming from an older event gets a reset event.",
    )
    heartbeat: Duration = Field(
        default=15.0,
        gt=0,
        description="A comment line goes to each client this often, so proxies keep the"
        " connection open.",
    )
    client_queue: int = Field(
        default=1000,
        ge=1,
        description="Most events queued for one client; a client further behind is dropped"
        " (reason slow).",
    )
    max_clients: int = Field(
        default=500, ge=1, description="Most stream clients of one collector at once (503 beyond)."
    )


class WebhookSettings(StrictModel):
    """Delivering events to webhook endpoints (docs/webhooks.md)."""

    timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="An attempt that has no answer within this long failed (and is retried).",
    )
    retry_delays: list[Annotated[Duration, Field(gt=0)]] = Field(
        default=[5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0],
        min_length=1,
        description="Durations to wait before each retry after a failed attempt (the default,"
        " in seconds: 5s, 30s, 2m, 10m, 30m, 1h); the last one repeats until give_up_after.",
    )
    give_up_after: Duration = Field(
        default=24 * 3600.0,
        gt=0,
        description="A message not delivered this long after it was made is marked failed.",
    )
    poll_interval: Duration = Field(
        default=1.0,
        gt=0,
        description="How often each collector looks for new events and messages due.",
    )


class AlertSettings(StrictModel):
    """Evaluating alert rules (docs/alerts.md): one collector at a time does it."""

    interval: Duration = Field(
        default=1.0, gt=0, description="How often the evaluating collector evaluates the rules."
    )
    lock_retry: Duration = Field(
        default=5.0,
        gt=0,
        description="How often the other collectors try to take over the evaluation (the"
        " longest an evaluation stays without an owner after its collector stopped cleanly).",
    )
    late_after: Duration = Field(
        default=60.0,
        gt=0,
        description="An alert recorded (or fired) from a reading older than this, at the time"
        " it was evaluated, is marked late.",
    )
    max_log_rows: int = Field(
        default=5000,
        ge=1,
        description="Most logged writes of readings one evaluation takes up (one transaction).",
    )
    kpi_interval: Duration = Field(
        default=60.0, gt=0, description="How often KPI rules compute the current shift's KPIs."
    )


class CommandSettings(StrictModel):
    """Commands to equipment (docs/protocol.md, Commands)."""

    default_expiry: Duration = Field(
        default=60.0,
        gt=0,
        description="A command not applied this long after the request never"
        " is (when the request gives no expires_in).",
    )
    max_expiry: Duration = Field(
        default=3600.0,
        gt=0,
        le=7 * 86400.0,
        description="The longest expires_in a request may give (at most 7d).",
    )
    grace: Duration = Field(
        default=30.0,
        ge=0,
        description="A command with no result this long after its expiry is marked timed_out.",
    )
    publish_timeout: Duration = Field(
        default=5.0, gt=0, description="Wait this long for the broker to take a command."
    )
    check_interval: Duration = Field(
        default=2.0,
        gt=0,
        description="How often each collector sends again the commands the broker did not"
        " take, and times out those without a result.",
    )

    @model_validator(mode="after")
    def _expiry_order(self) -> "CommandSettings":
        if self.default_expiry > self.max_expiry:
            raise ValueError("default_expiry must not be longer than max_expiry")
        return self


class CollectorIdentity(StrictModel):
    """Who this collector is."""

    log_level: LogLevel = Field(
        default="INFO", description="Least severe messages logged: DEBUG, INFO, WARNING or ERROR."
    )


class CollectorConfig(StrictModel):
    """Everything plantwire-collector needs to run."""

    collector: CollectorIdentity = Field(default_factory=CollectorIdentity, description="Logging.")
    database: DatabaseSettings = Field(description="Where readings are stored.")
    mqtt: MqttSettings = Field(description="The broker batches are consumed from.")
    http: HttpSettings = Field(default_factory=HttpSettings, description="The HTTP API.")
    series: SeriesSettings = Field(
        default_factory=SeriesSettings, description="Limits of the series API."
    )
    ingest: IngestSettings = Field(
        default_factory=IngestSettings, description="Consuming and writing batches."
    )
    agents: AgentSettings = Field(default_factory=AgentSettings, description="Agent liveness.")
    rate_limits: RateLimitSettings = Field(
        default_factory=RateLimitSettings, description="API rate limits per key."
    )
    equipment: EquipmentSettings = Field(
        default_factory=EquipmentSettings, description="The equipment model."
    )
    analytics: AnalyticsSettings = Field(
        default_factory=AnalyticsSettings, description="Derived data: rollups, states, counts."
    )
    stream: StreamSettings = Field(
        default_factory=StreamSettings, description="The live event stream."
    )
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings, description="Delivering events to webhooks."
    )
    alerts: AlertSettings = Field(
        default_factory=AlertSettings, description="Evaluating alert rules."
    )
    commands: CommandSettings = Field(
        default_factory=CommandSettings, description="Commands to equipment."
    )


def load_collector_config(path: Path) -> CollectorConfig:
    """Load and validate a collector configuration file."""
    return load_config(path, CollectorConfig, ENV_OVERRIDES)
