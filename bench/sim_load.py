"""The simulator serving bulk tags, and agent configurations that read them, for the benchmarks."""

from pathlib import Path
from typing import Any

import yaml

from bench.processes import BIN
from protocols.simulator.machine import bulk_tags
from protocols.simulator.opcua_server import NAMESPACE_URI, node_name

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def simulator_command(
    *, modbus_port: int = 0, opcua_port: int = 0, bulk: int, tick: float = 1.0
) -> list[str]:
    """`plantwire-sim` serving `bulk` extra tags on the given ports (0: that protocol off)."""
    return [
        str(BIN / "plantwire-sim"),
        "--modbus-port",
        str(modbus_port),
        "--opcua-port",
        str(opcua_port),
        "--bulk-tags",
        str(bulk),
        "--tick",
        str(tick),
        "--log-level",
        "WARNING",
    ]


def opcua_endpoint(port: int) -> str:
    """The simulator's OPC UA endpoint on a port of 127.0.0.1."""
    return f"opc.tcp://127.0.0.1:{port}/plantwire/sim"


def bulk_modbus_device(port: int, count: int, interval: str) -> dict[str, Any]:
    """One Modbus device reading the simulator's first `count` bulk tags, each with its type."""
    tags = [
        {
            "name": t.name,
            "table": "holding_register",
            "address": t.modbus_address,
            "type": t.data_type.value,
        }
        for t in bulk_tags(count)
    ]
    return {
        "type": "modbus",
        "name": "bulk",
        "host": "127.0.0.1",
        "port": port,
        "poll_interval": interval,
        "timeout": "5s",
        "tags": tags,
    }


def bulk_opcua_device(endpoint: str, count: int, interval: str, **settings: Any) -> dict[str, Any]:
    """One OPC UA device reading the simulator's first `count` bulk nodes; `settings` added."""
    tags = [
        {"name": t.name, "node": f"nsu={NAMESPACE_URI};s={node_name(t)}", "type": t.data_type.value}
        for t in bulk_tags(count)
    ]
    return {
        "type": "opcua",
        "name": "bulk",
        "endpoint": endpoint,
        "poll_interval": interval,
        "timeout": "30s",
        **settings,
        "tags": tags,
    }


def agent_config(
    folder: Path,
    devices: list[dict[str, Any]],
    *,
    mqtt: dict[str, Any],
    agent_id: str = "bench",
    http_port: int = 0,
) -> Path:
    """Write an agent YAML file (buffer in `folder`) and return its path."""
    path = folder / "agent.yaml"
    document = {
        "agent": {"id": agent_id, "log_level": "WARNING", "http_port": http_port},
        "buffer": {"path": str(folder / "buffer.sqlite")},
        "mqtt": mqtt,
        "devices": devices,
    }
    with path.open("w") as out:
        yaml.dump(document, out, Dumper=_Dumper, sort_keys=False)
    return path
