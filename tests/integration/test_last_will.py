"""An agent that dies without a word is marked offline by its last will, not by a timeout."""

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.harness import (
    collector_config,
    eventually,
    get_json,
    modbus_device,
    running_collector,
    running_simulator,
)
from tests.servers import MosquittoServer

BIN = Path(sys.executable).parent


async def test_a_killed_agent_is_marked_offline_by_its_last_will(
    mosquitto: MosquittoServer, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # Silence alone would take ten minutes to count: only the will can explain a quick offline.
    collector = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        sections={"agents": {"offline_after": "600s"}},
    )
    async with running_simulator(opcua=False) as simulator, running_collector(collector) as base:
        config = tmp_path / "agent.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "agent": {"id": "doomed", "http_port": 0, "heartbeat_interval": "1s"},
                    "buffer": {"path": str(tmp_path / "buffer.sqlite")},
                    "mqtt": {"url": mosquitto.url, "topic_prefix": topic_prefix},
                    "devices": [modbus_device(simulator.modbus_port)],
                }
            )
        )
        log = tmp_path / "agent.log"
        with log.open("wb") as output:
            agent = await asyncio.create_subprocess_exec(
                str(BIN / "plantwire-agent"),
                "run",
                "--config",
                str(config),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:

            async def status_is(wanted: str) -> bool:
                code, body = await get_json(f"{base}/api/v1/agents/doomed")
                return code == 200 and body["status"] == wanted

            async def online_with_a_heartbeat() -> bool:
                code, body = await get_json(f"{base}/api/v1/agents/doomed")
                return code == 200 and body["status"] == "online" and body["last_heartbeat"]

            await eventually(
                online_with_a_heartbeat, timeout=30, what=f"the agent online; see {log}"
            )
            agent.send_signal(signal.SIGKILL)
            await asyncio.wait_for(agent.wait(), 10)
            await eventually(
                lambda: status_is("offline"), timeout=20, what="the last will to mark it offline"
            )
        finally:
            if agent.returncode is None:
                agent.kill()
                await asyncio.wait_for(agent.wait(), 10)
