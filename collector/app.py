"""The collector's aiohttp application: database pool, MQTT consumer, API, health and metrics."""

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collector import api, dead_letter_api
from collector.agents import AgentRegistry
from collector.config import CollectorConfig, DatabaseSettings
from collector.consumer import Consumer
from collector.metrics import CollectorMetrics
from collector.migrate import migrate
from collector.partitions import drop_expired_partitions, ensure_partitions, forget_old_batches
from collector.problems import problem_middleware
from collector.state import AGENTS, METRICS, MQTT, SETTINGS, STORE
from collector.store import ReadingStore
from shared.errors import PlantwireError
from shared.mqtt import MqttClient
from shared.wire import Topics

log = logging.getLogger(__name__)
PARTITION_CHECK_S = 3600.0


def create_app(config: CollectorConfig) -> web.Application:
    """Build the application; its start-up connects to the database and the broker."""
    app = web.Application(middlewares=[problem_middleware])
    app[SETTINGS] = config
    app[METRICS] = CollectorMetrics()
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_consumer)
    app.add_routes(api.routes)
    app.add_routes(dead_letter_api.routes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].database
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
        settings.url.get_secret_value(),
        min_size=1,
        max_size=settings.pool_size,
        open=False,
        kwargs={"autocommit": True},
    )
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
    app[STORE] = ReadingStore(pool)
    app[AGENTS] = AgentRegistry(pool)
    tasks = [
        asyncio.create_task(_keep_partitions(pool, settings)),
        asyncio.create_task(_watch_agents(app[AGENTS], app[SETTINGS].agents.offline_after)),
    ]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await pool.close()


async def _watch_agents(registry: AgentRegistry, grace_s: float) -> None:
    while True:
        await asyncio.sleep(min(grace_s / 4, 5.0))
        try:
            for agent in await registry.mark_silent_offline(grace_s):
                log.warning("agent %s silent for %.0fs: marked offline", agent, grace_s)
        except psycopg.Error:
            log.exception("could not check agents' liveness; trying again")


async def _keep_partitions(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]], settings: DatabaseSettings
) -> None:
    while True:
        try:
            await maintain(pool, settings)
        except psycopg.Error:
            log.exception("partition maintenance failed; trying again in an hour")
        await asyncio.sleep(PARTITION_CHECK_S)


async def maintain(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]], settings: DatabaseSettings
) -> None:
    """Create partitions ahead, drop expired ones, forget old batch ids."""
    today = datetime.now(UTC).date()
    async with pool.connection() as conn:
        await ensure_partitions(conn, today, settings.partition_days_ahead)
        if settings.retention_days is not None:
            await drop_expired_partitions(conn, today, settings.retention_days)
        await forget_old_batches(conn, settings.batch_ledger_days)


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
    for kind in ("batch", "state", "heartbeat"):
        # In a shared group each message goes to one collector of the group.
        topic_filter = topics.all_of(kind)
        await client.subscribe(f"$share/{group}/{topic_filter}" if group else topic_filter, qos=1)
    consumer = Consumer(
        client,
        app[STORE],
        topics=topics,
        settings=config.ingest,
        metrics=app[METRICS],
        on_status=app[AGENTS],
    )
    task = asyncio.create_task(consumer.run(), name="consumer")
    log.info("consuming %s from %s", topics.all_batches(), config.mqtt.url)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers and the broker is connected, else 503."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app[STORE].ping(), timeout=2.0)
        checks["database"] = "ok"
    except (psycopg.Error, TimeoutError) as exc:
        checks["database"] = f"failing: {exc.__class__.__name__}"
    checks["mqtt"] = "ok" if request.app[MQTT].connected else "disconnected"
    healthy = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "failing", "checks": checks}, status=200 if healthy else 503
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this process's metrics."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
