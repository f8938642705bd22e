"""The collector's background checks and probes while the database fails."""

import asyncio
import json
import logging

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from collector import app as app_module
from collector.app import _keep_partitions, _watch_agents, healthz, readyz
from collector.config import DatabaseSettings
from collector.metrics import CollectorMetrics
from collector.pools import new_pool
from collector.state import MQTT, STORE, SUPERVISOR
from collector.store import ReadingStore
from shared.mqtt import MqttClient, MqttSettings
from shared.supervisor import Supervisor
from tests.unit.test_consumer import until

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"


class ScriptedRegistry:
    """Liveness checks that succeed or fail in the order of a script ('ok' or 'down')."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.checks = 0

    async def mark_silent_offline(self, grace_s: float) -> list[str]:
        step = self.script[self.checks] if self.checks < len(self.script) else "ok"
        self.checks += 1
        if step == "down":
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return ["press-1"] if self.checks == 1 else []

    async def online(self) -> dict[str, bool]:
        return {"press-1": False, "press-2": True}


async def test_liveness_checks_survive_database_failures_and_log_once_per_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = ScriptedRegistry(["ok", "down", "down", "ok", "down", "ok"])
    metrics = CollectorMetrics()
    task = asyncio.create_task(_watch_agents(registry, 0.02, metrics))  # type: ignore[arg-type]
    try:
        await until(lambda: registry.checks >= 7)
        assert not task.done(), "the watcher keeps going"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("agent press-1 silent for 0s: marked offline") == 1
    failures = [m for m in messages if m.startswith("cannot check agents' liveness")]
    assert (
        failures
        == [
            "cannot check agents' liveness: server closed the connection unexpectedly; trying again"
        ]
        * 2
    ), "two outages, each logged once"
    online = metrics.registry.get_sample_value
    assert online("plantwire_collector_agent_online", {"agent": "press-1"}) == 0.0
    assert online("plantwire_collector_agent_online", {"agent": "press-2"}) == 1.0


async def test_maintenance_that_cannot_reach_the_database_tries_again_after_a_pause(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "MAINTENANCE_RETRY_S", 0.01)
    settings = DatabaseSettings.model_validate({"url": NOWHERE})
    task = asyncio.create_task(_keep_partitions(new_pool(NOWHERE, 1), settings))

    def failures() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "collector.app"]

    try:
        with caplog.at_level(logging.ERROR, logger="collector.app"):
            await until(lambda: len(failures()) >= 2)
        assert not task.done(), "the maintenance task keeps trying instead of crashing"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert failures()[0].startswith("maintenance failed: the pool")
    assert failures()[0].endswith("is not open yet; trying again in a minute")


async def test_probes_report_a_database_that_does_not_answer() -> None:
    app = web.Application()
    app[STORE] = ReadingStore(new_pool(NOWHERE, 1))  # never opened: every query fails
    app[MQTT] = MqttClient(
        MqttSettings(url="mqtt://127.0.0.1:1"), client_id="probe-test", persistent_session=False
    )
    app[SUPERVISOR] = Supervisor("collector")
    health = await healthz(make_mocked_request("GET", "/healthz", app=app))
    assert health.status == 503
    assert json.loads(health.text or "") == {
        "status": "failing",
        "checks": {"database": "failing: PoolClosed", "mqtt": "disconnected"},
        "tasks": {},
    }
    ready = await readyz(make_mocked_request("GET", "/readyz", app=app))
    assert ready.status == 503
    assert json.loads(ready.text or "") == {
        "status": "unavailable",
        "checks": {"database": "failing: PoolClosed"},
    }
