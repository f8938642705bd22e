"""The collector's aiohttp application: database pool, MQTT consumer, API, health and metrics."""

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collector.agents import AgentRegistry
from collector.alerts.alerts import Alerts
from collector.alerts.evaluator import AlertEvaluator
from collector.alerts.rules import AlertRules
from collector.analytics.deriver import CLAIM_TIMEOUT_S, Deriver
from collector.analytics.equipment_store import EquipmentStore, watch_status
from collector.analytics.held_readings import HeldReadings
from collector.analytics.rollup_writer import RollupWriter
from collector.analytics.rollups import refresh_rollups
from collector.api.auth import Authenticator
from collector.api.keys import ApiKeys
from collector.api.operations import MAX_BODY_BYTES
from collector.api.routes import add_api, middlewares
from collector.commands import Commands
from collector.config import CollectorConfig, DatabaseSettings
from collector.consumer import Consumer
from collector.dead_letters import expire_dead_letters
from collector.event_hub import EventHub
from collector.events import expire_events
from collector.metrics import CollectorMetrics
from collector.migrate import migrate
from collector.partitions import (
    PartitionWindow,
    drain_default,
    drop_expired_partitions,
    ensure_partitions,
    forget_old_batches,
)
from collector.pools import new_pool
from collector.replica import ReadPools
from collector.state import (
    AGENTS,
    ALERT_RULES,
    ALERTS,
    AUTH,
    COMMANDS,
    EQUIPMENT,
    EVENT_HUB,
    KEYS,
    METRICS,
    MQTT,
    SETTINGS,
    STORE,
    SUPERVISOR,
    WEBHOOKS,
)
from collector.store import ReadingStore
from collector.web.dashboard import add_dashboard
from collector.webhooks import WebhookDelivery, WebhookEndpoints
from shared.cancellation import raise_if_cancelled
from shared.errors import PlantwireError
from shared.mqtt import MqttClient
from shared.supervisor import Supervisor
from shared.wire import Topics

log = logging.getLogger(__name__)
PARTITION_CHECK_S = 3600.0
MAINTENANCE_RETRY_S = 60.0
"""Pause after maintenance failed to reach the database."""
STOP_GRACE_S = 10.0


def create_app(config: CollectorConfig, *, platform: bool = True) -> web.Application:
    """Build the application; its start-up connects to the database and the broker.

    `platform=False` leaves out API keys, rate limits and HTTP metrics, for `make bench-api`
    to measure their cost; the programs never do.
    """
    metrics_ = CollectorMetrics()
    app = web.Application(
        middlewares=middlewares(config.http, metrics_ if platform else None),
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = config
    app[METRICS] = metrics_
    app[SUPERVISOR] = Supervisor(
        "collector", on_restart=lambda task: metrics_.task_restarts.labels(task=task).inc()
    )
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_consumer)
    # Last, so its cleanup runs first: every task stops before the pool and broker close.
    app.cleanup_ctx.append(_supervision)
    # Before the server waits for its handlers: open streams end instead of holding it up.
    app.on_shutdown.append(_end_streams)
    add_api(app, platform)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_dashboard(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].database
    metrics_ = app[METRICS]
    pool = new_pool(settings.url.get_secret_value(), settings.pool_size, metrics_.observe_query)
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout)
    except PoolTimeout as exc:
        await pool.close()
        raise PlantwireError(
            f"database.url: no connection to PostgreSQL within {settings.connect_timeout:g}s"
        ) from exc
    async with pool.connection() as conn:
        if settings.migrate_on_start:
            applied = await migrate(conn)
            if applied:
                log.info("applied migrations %s", applied)
        await ensure_partitions(conn, datetime.now(UTC).date(), settings.partition_days_ahead)
    replica = None
    if settings.read_url is not None:
        replica = new_pool(
            settings.read_url.get_secret_value(), settings.pool_size, metrics_.observe_query
        )
        # Not waited for: the API reads from the primary until the replica answers.
        await replica.open(wait=False)
    reads = ReadPools(pool, replica, metrics_)
    analytics = app[SETTINGS].analytics
    held = HeldReadings() if analytics.derive else None
    app[STORE] = ReadingStore(pool, partition_window(settings), reads, analytics.derive, held)
    app[AGENTS] = AgentRegistry(pool, reads)
    app[KEYS] = keys = ApiKeys(pool)
    app[AUTH] = auth = Authenticator(keys)
    app[EQUIPMENT] = equipment = EquipmentStore(pool)
    plant = app[SETTINGS].equipment.plant
    if plant is not None:
        await equipment.seed(plant)
        log.info("equipment file: %d sites", len(plant.sites))
    metrics_.active_users.set_function(auth.active)
    metrics_.watch_pool(pool)
    supervisor = app[SUPERVISOR]
    stream = app[SETTINGS].stream
    supervisor.add("maintenance", lambda: _keep_partitions(pool, settings, stream.retention))
    delivery = WebhookDelivery(pool, app[SETTINGS].webhooks, metrics_)
    app[EVENT_HUB] = hub = EventHub(
        settings.url.get_secret_value(),
        stream.client_queue,
        dropped=lambda reason: metrics_.stream_dropped.labels(reason=reason).inc(),
        arrived=delivery.wake,
    )
    metrics_.stream_clients.set_function(lambda: hub.clients)
    supervisor.add("event-hub", hub.run)
    app[WEBHOOKS] = WebhookEndpoints(pool)
    supervisor.add("webhooks", delivery.run)
    app[ALERT_RULES], app[ALERTS] = AlertRules(pool), Alerts(pool)
    evaluator = AlertEvaluator(settings.url.get_secret_value(), app[SETTINGS].alerts, metrics_)
    supervisor.add("alerts", evaluator.run)
    offline_after = app[SETTINGS].agents.offline_after
    supervisor.add("agent-liveness", lambda: _watch_agents(app[AGENTS], offline_after, metrics_))
    if replica is not None:
        supervisor.add("replica-lag", reads.watch_lag)
    supervisor.add("key-usage", auth.save_usage)
    rollups: RollupWriter | None = None
    if held is not None:
        # A claim is left when its collector has not rolled it up in far longer than it would.
        left_after = CLAIM_TIMEOUT_S + 2 * analytics.derive_interval
        deriver = Deriver(pool, analytics, metrics_, refresh_rollups, claim_timeout_s=left_after)
        supervisor.add("deriver", deriver.run)
        rollups = RollupWriter(pool, held, analytics.rollup_interval, paused=deriver.wake)
        supervisor.add("rollups", rollups.run)
        metrics_.rollup_held.set_function(lambda: held.readings)
    interval = app[SETTINGS].equipment.status_interval
    supervisor.add("equipment-status", lambda: watch_status(equipment, metrics_, interval))
    yield
    if rollups is not None:
        # Every task has stopped (their cleanup runs first), the consumer too: what it wrote
        # last is held as well, so nothing is left to wait for its claim.
        await rollups.flush()
    if replica is not None:
        await replica.close()
    await pool.close()


async def _end_streams(app: web.Application) -> None:
    app[EVENT_HUB].close()


async def _supervision(app: web.Application) -> AsyncIterator[None]:
    for task in app[SUPERVISOR].health():
        # Exported at 0 from the start, so a first restart is an increase alerts can see.
        app[METRICS].task_restarts.labels(task=task.name)
    app[SUPERVISOR].start()
    yield
    await app[SUPERVISOR].stop(STOP_GRACE_S)


def partition_window(settings: DatabaseSettings) -> PartitionWindow:
    """Days that get a partition of their own: never beyond retention."""
    back = settings.partition_days_back
    if settings.retention_days is not None:
        back = min(back, settings.retention_days)
    return PartitionWindow(days_back=back, days_ahead=settings.partition_days_ahead)


async def _watch_agents(
    registry: AgentRegistry, grace_s: float, metrics_: CollectorMetrics
) -> None:
    failing = False
    while True:
        await asyncio.sleep(min(grace_s / 4, 5.0))
        try:
            for agent in await registry.mark_silent_offline(grace_s):
                log.warning("agent %s silent for %.0fs: marked offline", agent, grace_s)
            metrics_.show_agents(await registry.online())
        except psycopg.OperationalError as exc:
            raise_if_cancelled(exc)  # a cancelled query surfaces as QueryCanceled
            if not failing:
                log.error("cannot check agents' liveness: %s; trying again", exc)
            failing = True
            continue
        failing = False


async def _keep_partitions(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]],
    settings: DatabaseSettings,
    events_retention: float | None = None,
) -> None:
    while True:
        try:
            await maintain(pool, settings, events_retention=events_retention)
        except psycopg.OperationalError as exc:
            raise_if_cancelled(exc)
            log.error("maintenance failed: %s; trying again in a minute", exc)
            await asyncio.sleep(MAINTENANCE_RETRY_S)
            continue
        await asyncio.sleep(PARTITION_CHECK_S)


async def maintain(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]],
    settings: DatabaseSettings,
    today: date | None = None,
    events_retention: float | None = None,
) -> None:
    """Create partitions ahead, place what waits in readings_default, expire what is too old.

    Stream events older than `events_retention` seconds go too (None: kept).
    """
    today = today or datetime.now(UTC).date()
    window = partition_window(settings)
    async with pool.connection() as conn:
        await ensure_partitions(conn, today, settings.partition_days_ahead)
        await drain_default(
            conn,
            today - timedelta(days=window.days_back),
            today + timedelta(days=window.days_ahead),
        )
        if settings.retention_days is not None:
            await drop_expired_partitions(conn, today, settings.retention_days)
        await forget_old_batches(conn, settings.batch_ledger_days)
        if settings.dead_letter_days is not None:
            await expire_dead_letters(conn, settings.dead_letter_days)
        if events_retention is not None:
            await expire_events(conn, events_retention)


async def _consumer(app: web.Application) -> AsyncIterator[None]:
    config = app[SETTINGS]
    topics = Topics(config.mqtt.topic_prefix)
    # In a shared group a persistent session would keep a dead collector in the group, and the
    # broker would go on queueing its share for it; the agents' resends cover a clean session.
    client = MqttClient(
        config.mqtt,
        client_id=config.mqtt.client_id or f"plantwire-collector-{socket.gethostname()}",
        persistent_session=config.ingest.shared_group is None,
        manual_ack=True,
    )
    await client.connect()
    app[MQTT] = client
    app[METRICS].mqtt_connected.set_function(lambda: 1.0 if client.connected else 0.0)
    group = config.ingest.shared_group
    for kind in ("batch", "state", "heartbeat", "result"):
        # In a shared group each message goes to one collector of the group.
        topic_filter = topics.all_of(kind)
        await client.subscribe(f"$share/{group}/{topic_filter}" if group else topic_filter, qos=1)
    app[COMMANDS] = commands = Commands(
        app[STORE].pool, client, topics=topics, settings=config.commands, metrics=app[METRICS]
    )
    consumer = Consumer(
        client,
        app[STORE],
        topics=topics,
        settings=config.ingest,
        metrics=app[METRICS],
        on_status=app[AGENTS],
        on_result=commands.take_result,
    )
    app[SUPERVISOR].add("consumer", consumer.run)
    app[SUPERVISOR].add("commands", commands.run)
    log.info("consuming %s from %s", topics.all_batches(), config.mqtt.url)
    yield
    await client.close()


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers and the broker is connected, else 503."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2.0):
            await request.app[STORE].ping()
        checks["database"] = "ok"
    except (psycopg.Error, TimeoutError) as exc:
        checks["database"] = f"failing: {exc.__class__.__name__}"
    checks["mqtt"] = "ok" if request.app[MQTT].connected else "disconnected"
    tasks = {task.name: task.state.value for task in request.app[SUPERVISOR].health()}
    for task in request.app[SUPERVISOR].health():
        if task.state.value == "failing":
            checks[f"task {task.name}"] = f"failing: {task.last_error}"
    healthy = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "failing", "checks": checks, "tasks": tasks},
        status=200 if healthy else 503,
    )


async def readyz(request: web.Request) -> web.Response:
    """200 while the primary answers (the API can serve), else 503; the replica's lag."""
    store = request.app[STORE]
    checks: dict[str, object] = {}
    try:
        async with asyncio.timeout(2.0):
            await store.ping()
        checks["database"] = "ok"
    except (psycopg.Error, TimeoutError) as exc:
        checks["database"] = f"failing: {exc.__class__.__name__}"
    if store.reads.replica is not None:
        try:
            async with asyncio.timeout(2.0):
                checks["replica_lag_s"] = await store.reads.replica_lag()
            checks["replica"] = "ok"
        except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
            # Not a reason to stop serving: reads go to the primary meanwhile.
            checks["replica"] = f"failing: {exc.__class__.__name__}; reading from the primary"
    ready = checks["database"] == "ok"
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this process's metrics."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
