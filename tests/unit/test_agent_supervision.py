"""The agent's tasks run supervised: a crash is counted, reported by /healthz, and restarted."""

import asyncio
from pathlib import Path

import aiohttp

from agent.service import AgentService
from shared.supervisor import Supervisor
from tests.harness import agent_config, eventually, get_json, modbus_device
from tests.servers import free_port


async def test_a_crashing_forwarder_is_restarted_counted_and_reported(tmp_path: Path) -> None:
    config = agent_config(
        agent_id="crashy",
        buffer=tmp_path / "b.sqlite",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # no broker: nothing else is failing
        prefix="crashy",
        devices=[modbus_device(free_port())],
    )
    supervisor = Supervisor("agent", backoff_initial=0.05, backoff_cap=0.1, healthy_after=3.0)
    service = AgentService(config, stop_grace=5, supervisor=supervisor)
    real = service.buffer.wait_for_data
    crashes = 3

    def broken() -> asyncio.Event:
        nonlocal crashes
        if crashes:
            crashes -= 1
            raise OSError("the buffer's disk is on fire")
        return real()

    service.buffer.wait_for_data = broken  # type: ignore[method-assign]
    await service.start()
    try:
        local = f"http://127.0.0.1:{service.http.port}"

        async def crashed_three_times() -> bool:
            forwarder = next(t for t in supervisor.health() if t.name == "forwarder")
            return forwarder.restarts == 3 and supervisor.failing() == ["forwarder"]

        await eventually(crashed_three_times, timeout=10, what="three forwarder crashes")
        status, body = await get_json(f"{local}/healthz")
        assert status == 503
        assert body["status"] == "failing"
        assert body["tasks"]["forwarder"]["state"] == "failing"
        assert body["tasks"]["forwarder"]["restarts"] == 3
        assert "disk is on fire" in body["tasks"]["forwarder"]["last_error"]
        assert body["tasks"]["poll-sim-modbus"]["state"] == "running"
        assert "task forwarder keeps crashing" in body["problems"]
        async with aiohttp.ClientSession() as session, session.get(f"{local}/metrics") as r:
            metrics = await r.text()
        assert 'plantwire_agent_task_restarts_total{task="forwarder"} 3.0' in metrics
        assert 'plantwire_agent_task_restarts_total{task="acks"} 0.0' in metrics
        assert 'plantwire_agent_task_failing{task="forwarder"} 1.0' in metrics
        heartbeat = service.health.heartbeat(await service.health.snapshot(False))
        assert b'"failing_tasks":["forwarder"]' in heartbeat

        async def healthy_again() -> bool:
            status, body = await get_json(f"{local}/healthz")
            return status == 200 and body["tasks"]["forwarder"]["state"] == "running"

        await eventually(healthy_again, timeout=10, what="the forwarder to run steadily")
    finally:
        await service.stop()
