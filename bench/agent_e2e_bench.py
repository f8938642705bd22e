"""make bench-agent-e2e: the agent end to end, PLC to broker, offered more and more points/s.

The real `plantwire-agent run` polls the simulator (`plantwire-sim`), each in its own process,
and forwards to a real Mosquitto. A stand-in collector in this process takes every batch off
the broker, decodes it with the collector's own decoder and acknowledges it at once, as the
collector does after its commit, so the agent's buffer drains as it would in a plant.

Modbus load shape: N devices of 100 uint16 holding registers each, one tag per register,
polled at 1 Hz, all on the simulator's one Modbus TCP port with distinct unit ids (1-247; the
next 247 devices read the next block of registers). The agent opens one connection per device
today; once devices of one endpoint share a connection, this shape gets that without a change.

Each load point runs a fresh agent: a warm-up from its first batch, then a steady window.
Delivered = readings received (and acknowledged) during the window, per second, each batch
counted once. Lag = time taken off the broker minus each reading's timestamp, which the agent
stamps at the poll (OPC UA: the server's source timestamp, so up to a poll interval more).
CPU is % of one core over the window; RSS is the agent's peak. `polled/s` and `backlog`
(readings in the agent's buffer at the end) come from the agent's /metrics.
"""

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import (  # noqa: E402
    BIN,
    Children,
    cpu_seconds,
    peak_rss_mb,
    profile,
    summarise_profile,
)
from bench.sim_load import (  # noqa: E402
    agent_config,
    bulk_opcua_device,
    opcua_endpoint,
    simulator_command,
)
from collector.batches import BatchDecoder, UnknownDictionary  # noqa: E402
from protocols.modbus.config import ModbusDevice  # noqa: E402
from protocols.simulator.machine import BULK_ADDRESS  # noqa: E402
from shared.acks import encode_ack  # noqa: E402
from shared.errors import MqttError, WireError  # noqa: E402
from shared.mqtt import MqttClient, MqttSettings  # noqa: E402
from shared.wire import Topics  # noqa: E402
from tests.servers import MosquittoServer, free_port, wait_for_port  # noqa: E402

LOADS = (10_000, 30_000, 60_000, 100_000, 150_000)
OPCUA_LOADS = (5_000, 10_000)
RANGES_LOAD = 10_000
TAGS_PER_DEVICE = 100
UNIT_IDS = 247  # Modbus unit ids 1-247
SUSTAINED = 0.98  # delivered / offered at or above this counts as sustained
SIM_TICK_S = 0.25  # bulk values change once a wall-clock second whatever the tick
TOPICS = Topics("bench")


def modbus_devices(port: int, points: int, *, as_ranges: bool = False) -> list[dict[str, Any]]:
    """Devices of 100 uint16 holding registers at 1 Hz on one port: one tag per register."""
    devices = []
    for index in range(points // TAGS_PER_DEVICE):
        block, unit = divmod(index, UNIT_IDS)
        first = BULK_ADDRESS + block * TAGS_PER_DEVICE
        tags = (
            range_tags(first)
            if as_ranges
            else [
                {
                    "name": f"hr{i:02d}",
                    "table": "holding_register",
                    "address": first + i,
                    "type": "uint16",
                }
                for i in range(TAGS_PER_DEVICE)
            ]
        )
        devices.append(
            {
                "type": "modbus",
                "name": f"plc{index:04d}",
                "host": "127.0.0.1",
                "port": port,
                "unit": unit + 1,
                "poll_interval": "1s",
                "timeout": "5s",
                "tags": tags,
            }
        )
    return devices


def range_tags(first: int) -> list[dict[str, Any]]:
    """The same 100 registers as one range entry, named from a pattern (tags hr00..hr99)."""
    return [
        {
            "name": "hr{index:02d}",
            "table": "holding_register",
            "range": {"start": first, "count": TAGS_PER_DEVICE},
            "type": "uint16",
        }
    ]


def ranges_refused() -> str | None:
    """Why the Modbus config model refuses a range entry, or None when it accepts one."""
    try:
        ModbusDevice.model_validate(modbus_devices(502, TAGS_PER_DEVICE, as_ranges=True)[0])
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return None


def bulk_registers(points: int) -> int:
    """Bulk tags the simulator needs so its holding registers cover `points` tags' blocks."""
    blocks = math.ceil(points / TAGS_PER_DEVICE / UNIT_IDS)
    return blocks * TAGS_PER_DEVICE  # every bulk tag spans at least one register


@dataclass(frozen=True, slots=True)
class Arrival:
    """One batch taken off the broker."""

    at: float  # time.monotonic()
    readings: int
    size: int  # payload bytes
    lags_ms: NDArray[np.float32]


class StandInCollector:
    """Acknowledges each batch as soon as it is received, as the collector does after commit.

    Batches are decoded by the collector's own decoder, so a payload it would refuse is not
    delivered here either; a batch sent again is acknowledged again but counted once.
    """

    def __init__(self, client: MqttClient) -> None:
        self._client = client
        self._decoder = BatchDecoder()
        self._seen: dict[str, set[tuple[int, int]]] = defaultdict(set)
        self._first: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._acks: set[asyncio.Future[None]] = set()
        self.arrivals: dict[str, list[Arrival]] = defaultdict(list)
        self.problems: Counter[str] = Counter()

    async def run(self) -> None:
        """Take batches off the broker until cancelled."""
        async for message in self._client.messages():
            received_us = time.time_ns() // 1000
            at = time.monotonic()
            try:
                agent = TOPICS.agent_of(message.topic)
                batch = self._decoder.decode(message.payload, agent)
            except UnknownDictionary as exc:
                # As the collector answers: send it again, carrying the dictionary.
                self.problems["dictionary asked for"] += 1
                self._acknowledge(agent, encode_ack(exc.epoch, [], dictionary=[exc.batch_id]))
                continue
            except WireError as exc:
                self.problems[f"undecodable batch ({exc})"] += 1
                continue
            self._acknowledge(agent, encode_ack(batch.epoch, [batch.batch_id]))
            key = (batch.epoch, batch.batch_id)
            if key in self._seen[agent]:
                self.problems["batch received again"] += 1
                continue
            self._seen[agent].add(key)
            if batch.refused is not None:
                self.problems["readings refused by the decoder"] += len(batch.refused.idx)
            lags = ((received_us - batch.ts) / 1000).astype(np.float32)
            self.arrivals[agent].append(Arrival(at, len(batch), len(message.payload), lags))
            self._first[agent].set()

    def first_batch(self, agent: str) -> asyncio.Event:
        """Set once the agent's first batch has arrived."""
        return self._first[agent]

    def window(self, agent: str, start: float, end: float) -> tuple[list[Arrival], float]:
        """The agent's batches of a window of monotonic time, and the seconds they span.

        The span runs from the last arrival at or before `start` to the last one before
        `end`, and the batches are those after the first of these up to the second: whole
        bursts on both sides, so one batch a second (OPC UA subscriptions, a single device)
        is not counted 19 or 21 times in a 20 s window. When that span is under 3/4 of the
        window (no arrivals, or a stalled agent), it is the window itself.
        """
        arrivals = self.arrivals[agent]
        before = [a.at for a in arrivals if a.at <= start]
        inside = [a for a in arrivals if start < a.at < end]
        if before and inside and inside[-1].at - before[-1] >= 0.75 * (end - start):
            return inside, inside[-1].at - before[-1]
        return inside, end - start

    def forget(self, agent: str) -> None:
        """Drop what was recorded for an agent."""
        self.arrivals.pop(agent, None)
        self._seen.pop(agent, None)
        self._first.pop(agent, None)

    def _acknowledge(self, agent: str, payload: bytes) -> None:
        # Not awaited here, as in the collector: the PUBACK may queue behind batches.
        task = asyncio.ensure_future(self._send_ack(agent, payload))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _send_ack(self, agent: str, payload: bytes) -> None:
        try:
            await self._client.publish(TOPICS.ack(agent), payload, timeout=30)
        except MqttError:
            self.problems["acknowledgement not published"] += 1


@dataclass(frozen=True, slots=True)
class Point:
    """The figures of one load point."""

    label: str
    offered: float
    delivered: float = 0.0
    lag_p50_ms: float = math.nan
    lag_p99_ms: float = math.nan
    agent_cpu_pct: float = math.nan
    agent_rss_mb: float = math.nan
    sim_cpu_pct: float = math.nan
    broker_cpu_pct: float = math.nan
    stand_in_cpu_pct: float = math.nan
    polled: float = math.nan
    acked: float = math.nan
    backlog: float = math.nan
    connections: float = math.nan
    first_data_s: float = math.nan
    wire_bytes_per_reading: float = math.nan
    note: str = ""

    @property
    def ratio(self) -> float:
        """Delivered / offered."""
        return self.delivered / self.offered

    @property
    def sustained(self) -> bool:
        """Whether at least 98 % of the offered points were delivered."""
        return self.ratio >= SUSTAINED


COLUMNS = (
    ("load", 17, "label", "s"),
    ("offered/s", 10, "offered", ",.0f"),
    ("delivered/s", 12, "delivered", ",.0f"),
    ("ratio", 6, "ratio", ".2f"),
    ("polled/s", 10, "polled", ",.0f"),
    ("acked/s", 10, "acked", ",.0f"),
    ("lag p50 ms", 11, "lag_p50_ms", ",.0f"),
    ("p99 ms", 8, "lag_p99_ms", ",.0f"),
    ("agent CPU%", 11, "agent_cpu_pct", ".1f"),
    ("RSS MB", 7, "agent_rss_mb", ".0f"),
    ("sim CPU%", 9, "sim_cpu_pct", ".0f"),
    ("broker%", 8, "broker_cpu_pct", ".0f"),
    ("stand-in%", 10, "stand_in_cpu_pct", ".0f"),
    ("backlog", 10, "backlog", ",.0f"),
    ("conns", 6, "connections", ".0f"),
    ("start s", 8, "first_data_s", ".1f"),
)


def header() -> str:
    """Column titles of the printed table."""
    return " ".join(
        f"{title:<{width}}" if i == 0 else f"{title:>{width}}"
        for i, (title, width, _, _) in enumerate(COLUMNS)
    )


def row(point: Point) -> str:
    """One load point as a table row (a dash where a figure is missing)."""
    cells = []
    for i, (_, width, name, spec) in enumerate(COLUMNS):
        value = getattr(point, name)
        if i == 0:
            cells.append(f"{value:<{width}}")
        elif isinstance(value, float) and math.isnan(value):
            cells.append(f"{'-':>{width}}")
        else:
            cells.append(f"{value:>{width}{spec}}")
    return " ".join(cells) + (f"   {point.note}" if point.note else "")


def scrape(port: int) -> dict[str, float]:
    """Readings polled and acknowledged so far, and readings buffered, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals = dict.fromkeys(
        (
            "plantwire_agent_device_readings_total",
            "plantwire_agent_buffer_readings",
            "plantwire_agent_readings_acknowledged_total",
        ),
        0.0,
    )
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return {
        "polled": totals["plantwire_agent_device_readings_total"],
        "backlog": totals["plantwire_agent_buffer_readings"],
        "acked": totals["plantwire_agent_readings_acknowledged_total"],
    }


async def scrape_or_none(port: int) -> dict[str, float] | None:
    """scrape(), or None when an overloaded agent does not answer in time."""
    try:
        return await asyncio.to_thread(scrape, port)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Simulator:
    """A running plantwire-sim serving one protocol on one port."""

    process: subprocess.Popen[bytes]
    port: int


def start_simulator(
    children: Children, log: Path, *, bulk: int, modbus_port: int = 0, opcua_port: int = 0
) -> Simulator:
    """Start plantwire-sim with one protocol on and wait until its port accepts connections.

    Its output goes to `log`: pymodbus logs an error with a hex dump for every answer to a
    client that has gone, which each agent stopped between load points is.
    """
    with log.open("ab") as out:
        process = children.start(
            simulator_command(
                modbus_port=modbus_port, opcua_port=opcua_port, bulk=bulk, tick=SIM_TICK_S
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # An OPC UA server with thousands of nodes takes a while to build its address space.
    wait_for_port(modbus_port or opcua_port, 180)
    return Simulator(process, modbus_port or opcua_port)


def connections_to(port: int) -> int:
    """Established TCP connections a server on 127.0.0.1:port has accepted."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local address as HEXIP:HEXPORT; state 01 is ESTABLISHED
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


@dataclass
class Rig:
    """What every load point shares: processes, broker, stand-in collector and timings."""

    children: Children
    broker: MosquittoServer
    stand_in: StandInCollector
    folder: Path
    warmup: float
    window: float
    start_timeout: float
    runs: int = 0

    async def measure(
        self,
        label: str,
        devices: list[dict[str, Any]],
        offered: float,
        simulator: Simulator,
        profile_to: Path | None = None,
    ) -> Point:
        """Run a fresh agent on `devices` and measure it over the steady window."""
        self.runs += 1
        agent_id = f"e2e{self.runs}"
        folder = self.folder / agent_id
        folder.mkdir()
        http_port = free_port()
        config = await asyncio.to_thread(
            agent_config,
            folder,
            devices,
            mqtt={"url": self.broker.url, "topic_prefix": TOPICS.prefix},
            agent_id=agent_id,
            http_port=http_port,
        )
        log_path = folder / "agent.log"
        with log_path.open("wb") as log:
            started = time.monotonic()
            agent = self.children.start(
                [str(BIN / "plantwire-agent"), "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            first = await self._first_batch(agent_id, agent)
            if first is None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                why = (
                    f"agent exited ({agent.returncode})"
                    if agent.poll() is not None
                    else (f"no batch within {self.start_timeout:.0f} s")
                )
                return Point(label, offered, note=f"{why}: {' '.join(tail)[:200]}")
            await asyncio.sleep(self.warmup)
            pids = {"agent": agent.pid, "sim": simulator.process.pid, "broker": self.broker.pid}
            pids["stand_in"] = os.getpid()
            before_metrics = await scrape_or_none(http_port)
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            start = time.monotonic()
            spy = profile(agent.pid, self.window, profile_to) if profile_to else None
            await asyncio.sleep(self.window)
            end = time.monotonic()
            if agent.poll() is not None:
                return Point(label, offered, note=f"agent exited ({agent.returncode}) meanwhile")
            cpu = {
                name: 100 * (cpu_seconds(pid) - cpu_before[name]) / (end - start)
                for name, pid in pids.items()
            }
            rss = peak_rss_mb(agent.pid)
            connections = connections_to(simulator.port)
            after_metrics = await scrape_or_none(http_port)
            if spy is not None:
                await asyncio.to_thread(spy.wait, 60)
            arrivals, seconds = self.stand_in.window(agent_id, start, end)
        finally:
            await asyncio.to_thread(self.children.stop, agent)
            self.stand_in.forget(agent_id)
        readings = sum(a.readings for a in arrivals)
        lags = np.concatenate([a.lags_ms for a in arrivals]) if arrivals else np.zeros(0)
        p50, p99 = np.percentile(lags, [50, 99]) if readings else (math.nan, math.nan)
        polled = acked = backlog = math.nan
        if before_metrics is not None and after_metrics is not None:
            polled = (after_metrics["polled"] - before_metrics["polled"]) / (end - start)
            acked = (after_metrics["acked"] - before_metrics["acked"]) / (end - start)
            backlog = after_metrics["backlog"]
        return Point(
            label,
            offered,
            delivered=readings / seconds,
            lag_p50_ms=float(p50),
            lag_p99_ms=float(p99),
            agent_cpu_pct=cpu["agent"],
            agent_rss_mb=rss,
            sim_cpu_pct=cpu["sim"],
            broker_cpu_pct=cpu["broker"],
            stand_in_cpu_pct=cpu["stand_in"],
            polled=polled,
            acked=acked,
            backlog=backlog,
            connections=connections,
            first_data_s=first - started,
            wire_bytes_per_reading=sum(a.size for a in arrivals) / readings
            if readings
            else math.nan,
        )

    async def _first_batch(self, agent_id: str, agent: subprocess.Popen[bytes]) -> float | None:
        """When its first batch arrived (monotonic); None if the agent exited or took too long."""
        arrived = self.stand_in.first_batch(agent_id)
        deadline = time.monotonic() + self.start_timeout
        while not arrived.is_set():
            if agent.poll() is not None or time.monotonic() > deadline:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await arrived.wait()
        return self.stand_in.arrivals[agent_id][0].at


def label_of(kind: str, points: float) -> str:
    """A load point's name, e.g. `modbus 30k`."""
    return f"{kind} {points / 1000:g}k"


async def sweep(args: argparse.Namespace, rig: Rig) -> list[Point]:
    """All load points, printed as they finish; the Modbus per-tag points come first."""
    points: list[Point] = []

    async def run(
        label: str,
        devices: list[dict[str, Any]],
        offered: float,
        simulator: Simulator,
    ) -> Point:
        runs = []
        for run in range(args.runs):
            runs.append(await rig.measure(label, devices, offered, simulator))
            if args.runs > 1:
                print(row(replace(runs[-1], label=f"{label} #{run + 1}")), flush=True)
        point = median_point(runs)
        print(row(point) + (" (median)" if args.runs > 1 else ""), flush=True)
        points.append(point)
        return point

    print(header(), flush=True)
    port = free_port()
    simulator = start_simulator(
        rig.children,
        rig.folder / "simulator.log",
        modbus_port=port,
        bulk=bulk_registers(4 * max(args.loads)),
    )
    for load in args.loads:
        await run(label_of("modbus", load), modbus_devices(port, load), load, simulator)
    # Twice the capacity, if the sweep did not offer it; that point may itself be sustained,
    # which raises the capacity: try once more, then leave it to a wider --loads.
    for _ in range(2):
        double = 2 * max_sustained(points)
        if not double or modbus_point(points, double) is not None:
            break
        await run(label_of("modbus", double), modbus_devices(port, double), double, simulator)
    refused = ranges_refused()
    if refused is None:
        ranges = modbus_devices(port, RANGES_LOAD, as_ranges=True)
        await run(label_of("ranges", RANGES_LOAD), ranges, RANGES_LOAD, simulator)
    else:
        print(f"ranges: skipped, the Modbus config does not accept a range entry ({refused})")
    if args.profile and not (BIN / "py-spy").exists():
        print("profile: skipped, py-spy is not installed in this environment")
    elif args.profile:
        profile_to = rig.folder / "agent.profile"
        devices = modbus_devices(port, args.profile)
        point = await rig.measure(
            label_of("profiled", args.profile), devices, args.profile, simulator, profile_to
        )
        print(row(point) + "   (under py-spy; not used in RESULT)", flush=True)
        if profile_to.exists():
            print(f"agent profile at {args.profile:,} points/s, own time per function (py-spy):")
            print("\n".join(summarise_profile(profile_to, top=15)), flush=True)
            if args.profile_out:
                shutil.copyfile(profile_to, args.profile_out)
    rig.children.stop(simulator.process)
    if args.opcua_loads:
        port = free_port()
        simulator = start_simulator(
            rig.children, rig.folder / "simulator.log", opcua_port=port, bulk=max(args.opcua_loads)
        )
        for mode in ("poll", "subscribe"):
            for load in args.opcua_loads:
                device = bulk_opcua_device(opcua_endpoint(port), load, "1s", mode=mode)
                await run(label_of(f"opcua-{mode}", load), [device], load, simulator)
        rig.children.stop(simulator.process)
    return points


def median_point(runs: list[Point]) -> Point:
    """Each figure's median over runs of one load point (missing figures left out)."""
    figures: dict[str, Any] = {}
    for field in fields(Point):
        values = [getattr(run, field.name) for run in runs]
        if isinstance(values[0], float):
            present = [v for v in values if not math.isnan(v)]
            figures[field.name] = float(np.median(present)) if present else math.nan
    notes = dict.fromkeys(run.note for run in runs if run.note)
    return replace(runs[0], **figures, note="; ".join(notes))


def max_sustained(points: list[Point]) -> int:
    """The highest offered Modbus per-tag load delivered at 98 % or more (0 if none)."""
    return max(
        (int(p.offered) for p in points if p.label.startswith("modbus ") and p.sustained),
        default=0,
    )


def modbus_point(points: list[Point], offered: float) -> Point | None:
    """The Modbus per-tag point at this offered load, if it was measured."""
    return next((p for p in points if p.label.startswith("modbus ") and p.offered == offered), None)


def result_line(points: list[Point]) -> str:
    """The closing RESULT line (nan where a point was not in the sweep)."""
    capacity = max_sustained(points)
    at_100k = modbus_point(points, 100_000)
    at_10k = modbus_point(points, 10_000)
    at_2x = modbus_point(points, 2 * capacity) if capacity else None
    ratio_2x = at_2x.delivered / capacity if at_2x is not None else math.nan
    return (
        f"RESULT max_sustained_points_per_s={capacity}"
        f" cpu_pct_at_100k={at_100k.agent_cpu_pct if at_100k else math.nan:.1f}"
        f" rss_mb_at_10k={at_10k.agent_rss_mb if at_10k else math.nan:.1f}"
        f" cpu_pct_per_1k_points_at_10k={at_10k.agent_cpu_pct / 10 if at_10k else math.nan:.2f}"
        f" delivered_ratio_at_2x_capacity={ratio_2x:.2f}"
        f" wire_bytes_per_reading={at_10k.wire_bytes_per_reading if at_10k else math.nan:.1f}"
    )


async def main_async(
    args: argparse.Namespace, children: Children, broker: MosquittoServer, folder: Path
) -> list[Point]:
    client = MqttClient(
        MqttSettings(url=broker.url, topic_prefix=TOPICS.prefix, max_inflight=1000),
        client_id="bench-stand-in",
        persistent_session=False,
        receive_queue=1000,
    )
    await client.connect()
    stand_in = StandInCollector(client)
    listener = asyncio.ensure_future(stand_in.run())
    try:
        await client.subscribe(TOPICS.all_batches())
        rig = Rig(children, broker, stand_in, folder, args.warmup, args.window, args.start_timeout)
        points = await sweep(args, rig)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await client.close()
    for problem, count in stand_in.problems.items():
        print(f"stand-in collector: {problem}: {count:,}")
    return points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer OPC UA points")
    parser.add_argument(
        "--loads",
        type=int,
        nargs="+",
        default=list(LOADS),
        help="offered Modbus points/s (multiples of 100)",
    )
    parser.add_argument(
        "--opcua-loads",
        type=int,
        nargs="*",
        default=None,
        help="offered OPC UA points/s (none: skip OPC UA)",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per load point, the median used (3; 1 quick)"
    )
    parser.add_argument("--warmup", type=float, default=None, help="seconds after first data")
    parser.add_argument("--window", type=float, default=None, help="seconds of steady window")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=180.0,
        help="seconds an agent may take to deliver its first batch",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="POINTS",
        help="also py-spy the agent at this Modbus load (an extra run)",
    )
    parser.add_argument(
        "--profile-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="keep the profile's collapsed stacks in FILE (for flame graphs)",
    )
    args = parser.parse_args()
    if args.opcua_loads is None:
        args.opcua_loads = [5_000] if args.quick else list(OPCUA_LOADS)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.warmup is None:
        args.warmup = 5.0 if args.quick else 10.0
    if args.window is None:
        args.window = 10.0 if args.quick else 20.0
    if any(load % TAGS_PER_DEVICE for load in args.loads):
        parser.error(f"--loads must be multiples of {TAGS_PER_DEVICE}")
    print(
        f"Modbus: N devices x {TAGS_PER_DEVICE} uint16 holding registers, one tag each, 1 Hz,"
        f" one simulator port, unit ids 1-{UNIT_IDS}; warm-up {args.warmup:g} s,"
        f" window {args.window:g} s; {os.cpu_count()} cores",
        flush=True,
    )
    broker = MosquittoServer()
    with Children() as children, tempfile.TemporaryDirectory(prefix="plantwire-e2e-") as tmp:
        broker.start()
        try:
            points = asyncio.run(main_async(args, children, broker, Path(tmp)))
        finally:
            broker.stop()
    capacity = max_sustained(points)
    print(
        f"max sustained (delivered >= {SUSTAINED:.0%} of offered): {capacity:,} points/s;"
        " delivered_ratio_at_2x_capacity = delivered at twice that / max sustained"
    )
    print(result_line(points))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every process it started is stopped by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)
