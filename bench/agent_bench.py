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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import BIN, cpu_seconds, peak_rss_mb  # noqa: E402
from bench.sim_load import (  # noqa: E402
    agent_config,
    bulk_modbus_device,
    bulk_opcua_device,
    opcua_endpoint,
    simulator_command,
)
from tests.servers import free_port, wait_for_port  # noqa: E402


def buffered(path: Path) -> int:
    """Readings ever committed to a buffer file (0 while the agent is still creating it)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) - 1 if row else 0


async def _raw_reads(port: int, count: int, clients: int, seconds: float) -> float:
    """Points/s the simulator serves to plain pymodbus clients reading the same blocks."""
    from pymodbus.client import AsyncModbusTcpClient

    from protocols.modbus.config import ModbusTag
    from protocols.modbus.planner import plan_reads

    tags = [ModbusTag.model_validate(t) for t in bulk_modbus_device(port, count, "1s")["tags"]]
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
    # No broker: this measures polling into the buffer only.
    config = agent_config(folder, [device], mqtt={"url": f"mqtt://127.0.0.1:{free_port()}"})
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
        simulator_command(modbus_port=modbus_port, opcua_port=opcua_port, bulk=args.tags),
        stdout=subprocess.DEVNULL,
    )
    endpoint = opcua_endpoint(opcua_port)
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
                "modbus": (bulk_modbus_device(modbus_port, args.tags, "1ms"), 3.0),
                "opcua": (bulk_opcua_device(endpoint, args.tags, "1ms"), 5.0),
                "modbus_1hz": (bulk_modbus_device(modbus_port, args.tags, "1s"), 5.0),
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
