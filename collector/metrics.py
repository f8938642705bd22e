"""Prometheus metrics of one collector process, in a registry of its own."""

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from collector.event_hub import SHUTDOWN, SLOW

WEBHOOK_OUTCOMES = ("delivered", "refused", "gone", "unanswered")
"""What a webhook delivery attempt can come to."""
STREAM_DROP_REASONS = (SLOW, SHUTDOWN)
"""Why the event hub drops a stream client."""


class CollectorMetrics:
    """Every figure the collector exports on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._query_kinds: dict[str, Histogram] = {}
        self.messages = Counter(
            "plantwire_collector_messages_total",
            "MQTT messages handled, by outcome (stored, duplicate, quarantined, lost, dictionary).",
            ["outcome"],
            registry=self.registry,
        )
        self.readings_stored = Counter(
            "plantwire_collector_readings_stored_total",
            "Readings committed to PostgreSQL.",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "plantwire_collector_dead_letters_total",
            "Payloads quarantined in the dead_letters table, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.refused_readings = Counter(
            "plantwire_collector_refused_readings_total",
            "Readings refused one by one from batches whose other readings were stored.",
            ["reason"],
            registry=self.registry,
        )
        self.task_restarts = Counter(
            "plantwire_collector_task_restarts_total",
            "Long-running tasks restarted after an unexpected error.",
            ["task"],
            registry=self.registry,
        )
        self.write_errors = Counter(
            "plantwire_collector_write_errors_total",
            "Failed database writes (retried until they succeed).",
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "plantwire_collector_write_seconds",
            "Time to commit one group of batches.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.ack_failures = Counter(
            "plantwire_collector_ack_failures_total",
            "Acknowledgements to agents that could not be published (the agent resends).",
            registry=self.registry,
        )
        self.active_users = Gauge(
            "active_users",
            "Distinct API keys used in the last five minutes.",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "plantwire_collector_rate_limited_total",
            "API requests refused with 429, by the key's role.",
            ["role"],
            registry=self.registry,
        )
        self.rate_limit_fallbacks = Counter(
            "plantwire_collector_rate_limit_fallbacks_total",
            "Times Redis failed and rate limits were counted in this process instead.",
            registry=self.registry,
        )
        self.rate_limit_shared = Gauge(
            "plantwire_collector_rate_limit_shared",
            "1 while rate limits are counted in Redis across replicas, 0 in this process.",
            registry=self.registry,
        )
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.pool_size = Gauge(
            "db_connection_pool_size",
            "Database connections of the pool: idle, in use, and requests waiting for one.",
            ["state"],
            registry=self.registry,
        )
        self.query_seconds = Histogram(
            "db_query_duration_seconds",
            "Time of each database statement, by kind (select, insert, update, delete, ...).",
            ["query_type"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.read_fallbacks = Counter(
            "plantwire_collector_read_fallbacks_total",
            "API reads sent to the primary because the read replica failed.",
            registry=self.registry,
        )
        self.ingest_lag = Histogram(
            "plantwire_collector_ingest_lag_seconds",
            "Seconds from the newest reading of a batch to its commit (resent batches included).",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.agent_online = Gauge(
            "plantwire_collector_agent_online",
            "1 while an agent is online in the registry, 0 once it stopped or went silent.",
            ["agent"],
            registry=self.registry,
        )
        self.replica_lag = Gauge(
            "plantwire_collector_replica_lag_seconds",
            "Seconds the read replica's replay is behind (NaN: no replica, or it fails).",
            registry=self.registry,
        )
        self.replica_lag.set(float("nan"))
        self.equipment_status = Gauge(
            "equipment_status",
            "1 for the status each machine (site/machine) is in, 0 for its other statuses: the"
            " states of its site's loss mapping, and unknown.",
            ["equipment", "status"],
            registry=self.registry,
        )
        self.derive_lag = Gauge(
            "plantwire_collector_derive_lag_seconds",
            "Age of the oldest logged write the deriver took up at its last pass (writes of the"
            " minute still running wait for it to end and are logged again, fresh).",
            registry=self.registry,
        )
        self.derive_pending = Gauge(
            "plantwire_collector_derive_pending_writes",
            "Logged writes and machines the deriver has not taken up, after its last pass.",
            registry=self.registry,
        )
        self.derive_seconds = Histogram(
            "plantwire_collector_derive_pass_seconds",
            "Seconds one pass of the deriver took (rollups, machine intervals and counts).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.rollup_held = Gauge(
            "plantwire_collector_rollup_held_readings",
            "Readings of written batches this collector holds in memory until their minutes"
            " end, to roll them up.",
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "plantwire_collector_webhook_attempts_total",
            "Webhook delivery attempts, by outcome: delivered (2xx), refused (another status,"
            " retried), gone (410, endpoint disabled), unanswered (no answer in time, retried).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in WEBHOOK_OUTCOMES:  # exported at 0 before the first attempt
            self.webhook_attempts.labels(outcome=outcome)
        self.webhook_seconds = Histogram(
            "plantwire_collector_webhook_delivery_seconds",
            "Time from sending a webhook to its receiver's answer (or giving up on it).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.webhook_backlog = Gauge(
            "plantwire_collector_webhook_oldest_pending_seconds",
            "Age of the oldest webhook message not yet delivered to an enabled endpoint (0: none).",
            registry=self.registry,
        )
        self.stream_clients = Gauge(
            "plantwire_collector_stream_clients",
            "Clients connected to this collector's event stream.",
            registry=self.registry,
        )
        self.stream_events = Counter(
            "plantwire_collector_stream_events_sent_total",
            "Events sent to stream clients (one per client it went to).",
            registry=self.registry,
        )
        self.stream_dropped = Counter(
            "plantwire_collector_stream_dropped_total",
            "Stream clients dropped, by reason: slow (its queue filled up), shutdown.",
            ["reason"],
            registry=self.registry,
        )
        for reason in STREAM_DROP_REASONS:
            self.stream_dropped.labels(reason=reason)
        self.commands = Counter(
            "plantwire_collector_commands_total",
            "Commands to equipment finished, by status (applied, refused, expired, unreachable,"
            " timed_out), counted by the collector that recorded it.",
            ["status"],
            registry=self.registry,
        )
        self.command_send_failures = Counter(
            "plantwire_collector_command_send_failures_total",
            "Commands the broker did not take in time (sent again until they expire).",
            registry=self.registry,
        )
        self.mqtt_connected = Gauge(
            "plantwire_collector_mqtt_connected",
            "1 while the collector is connected to the broker.",
            registry=self.registry,
        )

        self.alert_evaluations = Counter(
            "plantwire_collector_alert_evaluations_total",
            "Evaluations of the alert rules this collector made (only the owner makes them).",
            registry=self.registry,
        )
        self.alerts_fired = Counter(
            "plantwire_collector_alerts_fired_total",
            "Alerts that fired, by rule kind, counted by the collector that evaluated them.",
            ["kind"],
            registry=self.registry,
        )
        self.alert_owner = Gauge(
            "plantwire_collector_alert_owner",
            "1 while this collector holds the lock and evaluates the alert rules, else 0.",
            registry=self.registry,
        )
        self.alert_lag = Gauge(
            "plantwire_collector_alert_lag_seconds",
            "Age of the oldest logged write of readings the last evaluation took up.",
            registry=self.registry,
        )

    def observe_query(self, kind: str, seconds: float) -> None:
        """Record one database statement's duration."""
        child = self._query_kinds.get(kind)
        if child is None:
            child = self._query_kinds[kind] = self.query_seconds.labels(query_type=kind)
        child.observe(seconds)

    def show_agents(self, online: dict[str, bool]) -> None:
        """Replace the per-agent online gauges with the registry's current view."""
        # No await between clear and set: a scrape never sees a partial set.
        self.agent_online.clear()
        for agent, is_online in online.items():
            self.agent_online.labels(agent=agent).set(1.0 if is_online else 0.0)

    def show_equipment(self, statuses: dict[str, tuple[str, Sequence[str]]]) -> None:
        """Replace the equipment_status gauges: per machine, its status and all it can have."""
        self.equipment_status.clear()  # no await until all are set: a scrape sees all or none
        for equipment, (current, every) in statuses.items():
            for status in every:
                self.equipment_status.labels(equipment=equipment, status=status).set(
                    1.0 if status == current else 0.0
                )

    def watch_pool(self, pool: AsyncConnectionPool[Any]) -> None:
        """Export the pool's connections by state, read at each scrape."""

        def stat(name: str) -> Callable[[], float]:
            return lambda: float(pool.get_stats().get(name, 0))

        size, idle = stat("pool_size"), stat("pool_available")
        self.pool_size.labels(state="idle").set_function(idle)
        self.pool_size.labels(state="used").set_function(lambda: size() - idle())
        self.pool_size.labels(state="waiting").set_function(stat("requests_waiting"))
        self.pool_size.labels(state="max").set_function(lambda: float(pool.max_size))
