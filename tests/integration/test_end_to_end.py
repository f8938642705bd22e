"""Simulator -> agent -> Mosquitto -> collector -> PostgreSQL -> HTTP, all real."""

from datetime import datetime
from pathlib import Path

from protocols.simulator.machine import TAGS
from protocols.simulator.runner import Simulator
from shared.readings import datetime_to_us
from tests.harness import (
    agent_config,
    collector_config,
    eventually,
    get_json,
    modbus_device,
    opcua_device,
    running_agent,
    running_collector,
)
from tests.servers import MosquittoServer

SERVED = {
    "running": False,
    "door_closed": False,
    "state": 3,
    "reason_code": 2,
    "good_count": 4_000_000_123,
    "scrap_count": 17,
    "spindle_speed": -1500,
    "axis_offset": -321,
    "temperature": 71.25,
    "pressure": 6.123456789,
    "program": "P-2002",
    "speed_setpoint": 8000,
    "enable": False,
}
JSON_TYPES = {"bool": bool, "string": str, "float32": float, "float64": float}


async def test_values_types_and_timestamps_arrive_as_served(
    simulator: Simulator,
    mosquitto: MosquittoServer,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    simulator.machine.paused = True
    served_at_us = simulator.clock.time_us()
    simulator.machine.set(served_at_us, **SERVED)
    assert simulator.opcua is not None
    await simulator.opcua.publish()

    collector = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
    )
    agent = agent_config(
        agent_id="e2e-agent",
        buffer=tmp_path / "buffer.sqlite",
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        devices=[
            modbus_device(simulator.modbus_port),
            opcua_device(simulator.opcua.endpoint),
        ],
    )
    async with running_collector(collector) as base, running_agent(agent):
        expected = [(device, tag) for device in ("sim-modbus", "sim-opcua") for tag in TAGS]

        async def all_tags_arrived() -> bool:
            for device, tag in expected:
                status, body = await get_json(f"{base}/api/v1/readings", tag=f"{device}/{tag.name}")
                if status != 200 or body["count"] < 2:
                    return False
            return True

        await eventually(all_tags_arrived, timeout=45, what="readings of every tag over HTTP")
        checked_at_us = simulator.clock.time_us()

        for device, tag in expected:
            status, body = await get_json(f"{base}/api/v1/readings", tag=f"{device}/{tag.name}")
            assert status == 200
            assert body["data_type"] == tag.data_type.value, (device, tag.name)
            python_type = JSON_TYPES.get(tag.data_type.value, int)
            for reading in body["readings"]:
                value = reading["value"]
                assert type(value) is python_type, (device, tag.name, value)
                assert value == SERVED[tag.name], (device, tag.name, value)
                assert reading["quality"] == "good"
                ts_us = datetime_to_us(datetime.fromisoformat(reading["ts"]))
                if device == "sim-opcua":
                    assert ts_us == served_at_us, "OPC UA keeps the server's source timestamp"
                    server_ts = datetime.fromisoformat(reading["server_ts"])
                    assert datetime_to_us(server_ts) == served_at_us
                else:
                    assert served_at_us <= ts_us <= checked_at_us, "Modbus stamps the poll time"
                    assert "server_ts" not in reading
