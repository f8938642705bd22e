"""Building blocks for integration tests: configs pointing at test servers, running programs."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from agent.config import AgentConfig
from agent.service import AgentService
from collector.analytics.rollups import refresh_rollups
from collector.api.keys import hash_key, key_prefix
from collector.app import create_app
from collector.config import CollectorConfig
from protocols.simulator.machine import TAGS
from protocols.simulator.opcua_server import NAMESPACE_URI, node_name
from protocols.simulator.runner import Simulator
from protocols.simulator.scenario import Scenario
from shared.readings import Reading, Value, datetime_to_us
from tests.servers import free_port


def modbus_device(
    simulator_port: int, name: str = "sim-modbus", interval: str = "200ms"
) -> dict[str, Any]:
    """A Modbus device entry reading every simulator tag that Modbus serves."""
    return {
        "name": name,
        "type": "modbus",
        "host": "127.0.0.1",
        "port": simulator_port,
        "poll_interval": interval,
        "timeout": "1s",
        "tags": [
            {
                "name": tag.name,
                "table": tag.modbus_table,
                "address": tag.modbus_address,
                "type": tag.data_type.value,
                "length": tag.string_length,
            }
            for tag in TAGS
            if tag.modbus_table is not None
        ],
    }


def opcua_device(endpoint: str, name: str = "sim-opcua", interval: str = "200ms") -> dict[str, Any]:
    """An OPC UA device entry reading every simulator tag, types taken from the server."""
    return {
        "name": name,
        "type": "opcua",
        "endpoint": endpoint,
        "poll_interval": interval,
        "tags": [
            {"name": tag.name, "node": f"nsu={NAMESPACE_URI};s={node_name(tag)}"} for tag in TAGS
        ],
    }


def agent_config(
    *, agent_id: str, buffer: Path, mqtt_url: str, prefix: str, devices: list[dict[str, Any]]
) -> AgentConfig:
    """An agent configuration for tests."""
    return AgentConfig.model_validate(
        {
            "agent": {"id": agent_id, "http_port": 0, "heartbeat_interval": "1s"},
            "buffer": {"path": str(buffer)},
            "mqtt": {"url": mqtt_url, "topic_prefix": prefix, "connect_timeout": "5s"},
            "forward": {"publish_timeout": "3s", "retry_interval": "200ms", "linger": "20ms"},
            "devices": devices,
        }
    )


def collector_config(
    *,
    database_url: str,
    mqtt_url: str,
    prefix: str,
    client_id: str,
    sections: dict[str, Any] | None = None,
    **ingest: Any,
) -> CollectorConfig:
    """A collector configuration for tests, listening on a free port."""
    return CollectorConfig.model_validate(
        {
            "database": {"url": database_url, "connect_timeout": "10s"},
            "mqtt": {"url": mqtt_url, "topic_prefix": prefix, "client_id": client_id},
            "http": {"host": "127.0.0.1", "port": free_port()},
            "ingest": {"retry_interval": "200ms", **ingest},
            **(sections or {}),
        }
    )


def replica_configs(
    database_url: str,
    mqtt_url: str,
    prefix: str,
    sections: dict[str, Any] | None = None,
    count: int = 2,
) -> list[CollectorConfig]:
    """Configurations of collector replicas sharing one database and broker, each its own port."""
    return [
        collector_config(
            database_url=database_url,
            mqtt_url=mqtt_url,
            prefix=prefix,
            client_id=f"{prefix}-replica-{n}",
            sections=sections,
        )
        for n in range(1, count + 1)
    ]


@contextlib.asynccontextmanager
async def running_collector(config: CollectorConfig) -> AsyncIterator[str]:
    """Run a collector in this process; yield its base URL."""
    async with running_collector_app(config) as (_, base):
        yield base


@contextlib.asynccontextmanager
async def running_collector_app(
    config: CollectorConfig,
) -> AsyncIterator[tuple[web.Application, str]]:
    """Run a collector in this process; yield its application (to look inside) and base URL."""
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, config.http.host, config.http.port)
    await site.start()
    try:
        yield app, f"http://{config.http.host}:{config.http.port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[AgentService]:
    """Run an agent in this process."""
    service = AgentService(config)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@contextlib.asynccontextmanager
async def running_simulator(*, opcua: bool = True, **options: Any) -> AsyncIterator[Simulator]:
    """Run the simulator on free ports; without `opcua` it serves Modbus only (starts faster)."""
    simulator = Simulator(
        opcua_port=free_port() if opcua else None, modbus_port=free_port(), **options
    )
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, what: str = "condition"
) -> None:
    """Wait until `check` returns true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


TEST_KEY = f"pwk_7e57ab1e_{'k' * 32}"
"""An admin key every test database has (put in the template): tests use it by default."""
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def add_test_key(conn: psycopg.Connection[Any]) -> None:
    """Store TEST_KEY as an admin key in a migrated database."""
    conn.execute(
        "INSERT INTO api_keys (prefix, key_hash, name, role, created_by)"
        " VALUES (%s, %s, 'tests', 'admin', 'tests')",
        (key_prefix(TEST_KEY), hash_key(TEST_KEY)),
    )


async def get_json(url: str, **params: str) -> tuple[int, Any]:
    """GET a URL with the test key; return status and decoded JSON body."""
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(url, params=params) as response,
    ):
        return response.status, await response.json(content_type=None)


async def metric(base: str, name: str, **labels: str) -> float:
    """One sample of a program's /metrics, by name and labels (0 when it is not exported)."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


DISTINCT_VALUES: dict[str, Any] = {
    "running": True,
    "door_closed": False,
    "state": 2,
    "reason_code": 5,
    "good_count": 123_456_789,
    "scrap_count": 3,
    "spindle_speed": -32_000,
    "axis_offset": 499,
    "temperature": -12.5,
    "pressure": 1.0e-3,
    "program": "RECIPE42",
    "speed_setpoint": 9000,
    "enable": False,
}
"""A value for every simulator tag, each different from the machine's start value but one."""


def by_tag(readings: Sequence[Reading]) -> dict[str, Reading]:
    """Readings keyed by tag name (the last one wins)."""
    return {reading.tag: reading for reading in readings}


SCENARIOS = Path(__file__).resolve().parents[1] / "protocols" / "simulator" / "scenarios"
NORMAL_SHIFT = SCENARIOS / "normal_shift.yaml"
"""The sample scenario: an early shift of two machines, with a 16-bit rollover and a reset."""
ScriptedRow = tuple[str, str, int, Value]


def expected_rows(scenario: Scenario) -> list[ScriptedRow]:
    """Every value a scenario gives each variable, with its time (us): initial ones, then changes.

    Rows are (machine, variable, ts_us, value), sorted by their repr.
    """
    rows: list[ScriptedRow] = [
        (machine, variable, datetime_to_us(scenario.start), value)
        for machine, values in scenario.initial_values().items()
        for variable, value in values.items()
    ]
    rows.extend(
        (change.machine, variable, datetime_to_us(change.at), value)
        for change in scenario.timeline()
        for variable, value in change.values.items()
    )
    return sorted(rows, key=repr)


PLANT_STATES: list[dict[str, Any]] = [
    {"name": "stopped", "values": [0], "element": "planned_downtime"},
    {"name": "running", "values": [1], "element": "production"},
    {"name": "idle", "values": [2], "element": "no_orders"},
    {"name": "down", "values": [3], "element": "delay"},
    {"name": "setup", "values": [4], "element": "setup"},
]
"""The simulator's state codes as a loss mapping's states (the analytics tests share them)."""


class RecordedRollups:
    """A rollup refresh for the deriver or the rollup writer that records what it is asked,
    and with `real`, does it (else the rollups have tests of their own)."""

    def __init__(self, real: bool = False) -> None:
        self.asked: list[tuple[list[int], datetime, datetime]] = []
        self._real = real

    async def __call__(
        self, conn: Any, work: Sequence[tuple[Sequence[int], datetime, datetime]]
    ) -> int:
        self.asked.extend((list(ids), start, end) for ids, start, end in work)
        return await refresh_rollups(conn, work) if self._real else 0
