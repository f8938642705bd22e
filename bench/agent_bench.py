"""make bench-agent: how fast one agent moves Modbus and OPC UA points into its buffer.

A simulator serving 10,000 extra tags runs in its own process; the agent runs as the real
`plantwire-agent run` in another, so their CPU and memory are measured apart. Phases:
  1. Modbus, 10,000 tags, polled back to back: points/s committed to the buffer.
  2. OPC UA, 10,000 nodes, polled back to back: points/s committed to the buffer.
  3. Modbus, 10,000 tags at 1 Hz: the agent's peak RSS and mean CPU.
Each rate is the median of several windows. The simulator's CPU is printed beside each phase
to show it is not the limit.
"""

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocols.simulator.machine import bulk_tags  # noqa: E402
from protocols.simulator.opcua_server import NAMESPACE_URI, node_name  # noqa: E402
from tests.servers import free_port, wait_for_port  # noqa: E402

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def buffered(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
    return int(row[0]) if row else 0


def agent_config(folder: Path, device: dict[str, Any]) -> Path:
    path = folder / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "bench", "log_level": "WARNING", "http_port": 0},
                "buffer": {"path": str(folder / "buffer.sqlite")},
                "mqtt": {
                    "url": f"mqtt://127.0.0.1:{free_port()}"
                },  # no broker: measure polling only
                "devices": [device],
            }
        )
    )
    return path


def modbus_device(port: int, count: int, interval: str) -> dict[str, Any]:
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


def opcua_device(endpoint: str, count: int, interval: str) -> dict[str, Any]:
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
        "tags": tags,
    }


async def _raw_reads(port: int, count: int, clients: int, seconds: float) -> float:
    """Points/s the simulator serves to plain pymodbus clients reading the same blocks."""
    from pymodbus.client import AsyncModbusTcpClient

    from protocols.modbus.config import ModbusTag
    from protocols.modbus.planner import plan_reads

    tags = [ModbusTag.model_validate(t) for t in modbus_device(port, count, "1s")["tags"]]
    requests = plan_reads(tags, max_gap=16)
    served = 0

    async def one_client() -> None:
        nonlocal served
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5)
        await client.connect()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for request in requests:
                await client.read_holding_registers(request.address, count=request.count)
                served += len(request.tags)
        client.close()

    import asyncio

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return served / seconds


def run_phase(
    folder: Path,
    device: dict[str, Any],
    sim_pid: int,
    *,
    warmup: float,
    windows: int,
    window_s: float,
) -> dict[str, float]:
    """Run an agent on one device; return points/s (median window), CPU and RSS figures."""
    folder.mkdir()
    config = agent_config(folder, device)
    agent = subprocess.Popen([str(BIN / "plantwire-agent"), "run", "--config", str(config)])
    try:
        buffer = folder / "buffer.sqlite"
        deadline = time.monotonic() + 120
        while not buffer.exists() or buffered(buffer) == 0:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"agent did not start buffering (exit {agent.returncode})")
            time.sleep(0.2)
        time.sleep(warmup)
        rates = []
        start_cpu, start_sim_cpu, start = (
            cpu_seconds(agent.pid),
            cpu_seconds(sim_pid),
            time.monotonic(),
        )
        count = buffered(buffer)
        for _ in range(windows):
            began, before = time.monotonic(), count
            time.sleep(window_s)
            count = buffered(buffer)
            rates.append((count - before) / (time.monotonic() - began))
        elapsed = time.monotonic() - start
        return {
            "points_per_s": statistics.median(rates),
            "agent_cpu_pct": 100 * (cpu_seconds(agent.pid) - start_cpu) / elapsed,
            "sim_cpu_pct": 100 * (cpu_seconds(sim_pid) - start_sim_cpu) / elapsed,
            "rss_mb": peak_rss_mb(agent.pid),
        }
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window", type=float, default=3.0, help="seconds per window")
    args = parser.parse_args()
    modbus_port, opcua_port = free_port(), free_port()
    simulator = subprocess.Popen(
        [
            str(BIN / "plantwire-sim"),
            "--modbus-port",
            str(modbus_port),
            "--opcua-port",
            str(opcua_port),
            "--bulk-tags",
            str(args.tags),
            "--tick",
            "1",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
    )
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/plantwire/sim"
    try:
        wait_for_port(modbus_port, 60)
        wait_for_port(opcua_port, 120)
        import asyncio

        capacity = asyncio.run(_raw_reads(modbus_port, args.tags, clients=3, seconds=5))
        print(
            f"simulator  {capacity:>10,.0f} points/s served to 3 plain pymodbus clients"
            " (its capacity, to compare with the agent's rate)",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="plantwire-bench-") as tmp:
            folder = Path(tmp)
            phases = {
                "modbus": (modbus_device(modbus_port, args.tags, "1ms"), 3.0),
                "opcua": (opcua_device(endpoint, args.tags, "1ms"), 5.0),
                "modbus_1hz": (modbus_device(modbus_port, args.tags, "1s"), 5.0),
            }
            results = {}
            for name, (device, warmup) in phases.items():
                results[name] = run_phase(
                    folder / name,
                    device,
                    simulator.pid,
                    warmup=warmup,
                    windows=args.windows,
                    window_s=args.window,
                )
                figures = results[name]
                print(
                    f"{name:<11} {figures['points_per_s']:>10,.0f} points/s   agent CPU"
                    f" {figures['agent_cpu_pct']:5.1f}%   simulator CPU"
                    f" {figures['sim_cpu_pct']:5.1f}%   agent peak RSS"
                    f" {figures['rss_mb']:6.1f} MB",
                    flush=True,
                )
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)
    print(
        f"RESULT modbus_points_per_s={results['modbus']['points_per_s']:.0f}"
        f" opcua_points_per_s={results['opcua']['points_per_s']:.0f}"
        f" rss_mb_10k_tags={results['modbus_1hz']['rss_mb']:.1f}"
        f" cpu_pct_10k_tags_1hz={results['modbus_1hz']['agent_cpu_pct']:.1f}"
        f" sim_cpu_pct_modbus={results['modbus']['sim_cpu_pct']:.1f}"
        f" sim_capacity_points_per_s={capacity:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
