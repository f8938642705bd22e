"""How long `plantwire-agent check-config` takes on a plant-sized configuration.

Writes an agent configuration of 1,000 Modbus devices with 100 holding registers each
(100,000 tags), once as one range per device and once as one entry per register, and times:
  - check-config's work in this process (read, parse, validate, expand ranges, check files),
    the median of several runs;
  - the whole `plantwire-agent check-config FILE` command, interpreter start included.
"""

import argparse
import contextlib
import io
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

from agent.cli import main as agent_main  # noqa: E402


def document(devices: int, registers: int, *, ranges: bool) -> dict[str, Any]:
    """An agent configuration of `devices` devices behind gateways, `registers` tags each."""
    entries = []
    for n in range(devices):
        if ranges:
            tags: list[dict[str, Any]] = [
                {
                    "name": "hr{address:03d}",
                    "table": "holding_register",
                    "type": "uint16",
                    "range": {"start": 0, "count": registers},
                }
            ]
        else:
            tags = [
                {"name": f"hr{a:03d}", "table": "holding_register", "address": a, "type": "uint16"}
                for a in range(registers)
            ]
        entries.append(
            {
                "name": f"press-{n:04d}",
                "type": "modbus",
                "host": f"gateway-{n // 250}",
                "unit": n % 250 + 1,
                "poll_interval": "1s",
                "tags": tags,
            }
        )
    return {
        "agent": {"id": "bench"},
        "buffer": {"path": "/var/lib/plantwire/buffer.sqlite"},
        "mqtt": {"url": "mqtt://localhost"},
        "devices": entries,
    }


def time_check(path: Path, runs: int, tags: int) -> float:
    """Median seconds of check-config's work in this process; fails if it refuses the file."""
    times = []
    for _ in range(runs):
        out = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = agent_main(["check-config", str(path)])
        times.append(time.perf_counter() - started)
        if code != 0 or f" {tags} tags" not in out.getvalue():
            raise SystemExit(f"check-config refused {path}: exit {code}, {out.getvalue()!r}")
    return statistics.median(times)


def time_command(path: Path) -> float:
    """Seconds the whole command takes, interpreter start included."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return time.perf_counter() - started


def main() -> None:
    """Print the figures for ranges and for one entry per register, then a RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--registers", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape, ranges in (("ranges", True), ("per_tag", False)):
            path = Path(tmp) / f"{shape}.yaml"
            text = yaml.safe_dump(document(args.devices, args.registers, ranges=ranges))
            path.write_text(text)
            in_process = time_check(path, args.runs, args.devices * args.registers)
            command = time_command(path)
            results[shape] = {"bytes": len(text), "check_s": in_process, "command_s": command}
            print(
                f"{shape:8} {args.devices * args.registers} tags, {len(text) / 1e6:6.2f} MB of"
                f" YAML: check-config {in_process:.3f} s in process (median of {args.runs}),"
                f" {command:.3f} s as a command"
            )
    print(
        f"RESULT check_config_s_ranges={results['ranges']['check_s']:.3f}"
        f" check_config_s_per_tag={results['per_tag']['check_s']:.3f}"
        f" command_s_ranges={results['ranges']['command_s']:.3f}"
        f" yaml_mb_ranges={results['ranges']['bytes'] / 1e6:.2f}"
        f" yaml_mb_per_tag={results['per_tag']['bytes'] / 1e6:.2f}"
    )


if __name__ == "__main__":
    main()
