"""Agent health end to end: birth, heartbeats, death, the silent-agent grace, local /metrics."""

import asyncio
from pathlib import Path

import aiohttp

from protocols.simulator.runner import Simulator
from tests.harness import (
    agent_config,
    collector_config,
    eventually,
    get_json,
    modbus_device,
    running_agent,
    running_collector,
)
from tests.servers import MosquittoServer, free_port


async def test_birth_heartbeat_death_and_local_endpoints(
    simulator: Simulator,
    mosquitto: MosquittoServer,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    collector = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-c",
    )
    config = agent_config(
        agent_id="healthy",
        buffer=tmp_path / "b.sqlite",
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        devices=[
            modbus_device(simulator.modbus_port),
            {**modbus_device(free_port(), name="gone"), "timeout": "200ms"},
        ],
    )
    async with running_collector(collector) as base:
        async with running_agent(config) as agent:

            async def reported() -> bool:
                status, body = await get_json(f"{base}/api/v1/agents/healthy")
                return (
                    status == 200
                    and body["last_heartbeat"] is not None
                    and (body["last_heartbeat"]["readings_acknowledged"] > 0)
                )

            await eventually(reported, what="birth and a heartbeat with acknowledged readings")
            _, body = await get_json(f"{base}/api/v1/agents/healthy")
            assert body["status"] == "online"
            assert body["devices"] == ["sim-modbus", "gone"]
            assert body["version"] == "0.1.0"
            assert len(body["config_hash"]) == 64
            assert body["epoch"] == agent.buffer.epoch
            beat = body["last_heartbeat"]
            assert beat["devices"] == {"sim-modbus": "connected", "gone": "disconnected"}
            assert set(beat["buffer"]) >= {"readings", "oldest_age_s", "dropped_oldest"}

            local = f"http://127.0.0.1:{agent.http.port}"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{local}/metrics") as response:
                    text = await response.text()
                    assert response.status == 200
                assert 'plantwire_agent_device_connected{device="gone"} 0.0' in text
                assert "plantwire_agent_readings_acknowledged_total" in text
                assert 'plantwire_agent_buffer_dropped_readings_total{policy="drop_oldest"}' in text
                async with session.get(f"{local}/healthz") as response:
                    health = await response.json(content_type=None)
                    assert response.status == 200
                assert health["status"] == "degraded"
                assert "device gone disconnected" in health["problems"]
                async with session.get(f"{local}/nothing") as response:
                    assert response.status == 404
                async with session.post(f"{local}/metrics") as response:
                    assert response.status == 405

        async def offline() -> bool:
            _, body = await get_json(f"{base}/api/v1/agents/healthy")
            return bool(body["status"] == "offline")

        await eventually(offline, what="a clean stop to publish offline")
        status, listing = await get_json(f"{base}/api/v1/agents")
        assert status == 200
        assert [a["agent"] for a in listing["agents"]] == ["healthy"]
        status, problem = await get_json(f"{base}/api/v1/agents/nobody")
        assert status == 404
        assert problem["invalid_params"][0]["name"] == "agent_id"


async def test_a_silent_agent_goes_offline_after_the_grace_period(
    simulator: Simulator,
    mosquitto: MosquittoServer,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    collector = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-c",
        sections={"agents": {"offline_after": "2s"}},
    )
    config = agent_config(
        agent_id="quiet",
        buffer=tmp_path / "b.sqlite",
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        devices=[modbus_device(simulator.modbus_port)],
    )
    async with running_collector(collector) as base, running_agent(config):

        async def status_is(expected: str) -> bool:
            code, body = await get_json(f"{base}/api/v1/agents/quiet")
            return code == 200 and body["status"] == expected

        await eventually(lambda: status_is("online"), what="the agent online")
        health_task = next(t for t in asyncio.all_tasks() if t.get_name() == "heartbeat")
        health_task.cancel()  # the agent hangs: connected, but no heartbeats any more
        await asyncio.sleep(0)
        await eventually(
            lambda: status_is("offline"),
            timeout=15,
            what="offline after the grace period, with no last will",
        )
