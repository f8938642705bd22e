"""make bench-ingest: the collector's end-to-end ingest rate beside PostgreSQL's own COPY rate.

Servers: a durable PostgreSQL (fsync on) and Mosquitto, both from Debian, on free ports; the
collector runs as the real `plantwire-collector run` process. Phases, repeated --runs times:
  1. End to end: simulated agents publish prepared batches at QoS 1, each with a window of
     batches awaiting the collector's acknowledgement (as a real agent does), so the offered
     load is exactly what the collector accepts. Rate = readings / (first publish to last ack).
  2. Plain COPY: the same readings, already encoded, loaded by one binary COPY into a second
     database migrated with the same schema, partitions and indexes; then again split over
     two connections at once, as the collector writes (ingest.concurrent_writes = 2).
  3. End to end again with version 3 batches of the same number of readings, made of blocks
     of one poll each (a pass over all tags at one timestamp); each agent's first batch
     carries its tag dictionary, the others name it (keys `*_v3`).
Then, once: a fixed offered load (default 50,000 readings/s) for --latency-seconds, with the
latency of each batch from its publish to the collector's acknowledgement, which is sent after
the commit, so it bounds publish-to-commit from above.
Every table is emptied before each phase so both sides write into tables of the same size,
and one untimed pass of each side warms the servers first.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import BIN, profile, summarise_profile, tree_cpu  # noqa: E402
from collector.batches import decode_batch  # noqa: E402
from collector.copy_rows import COPY_SQL, HEADER, TRAILER, encode_rows  # noqa: E402
from collector.partitions import ensure_partitions  # noqa: E402
from shared.acks import decode_ack  # noqa: E402
from shared.blocks import encode_block  # noqa: E402
from shared.mqtt import MqttClient, MqttSettings  # noqa: E402
from shared.readings import DataType, Quality, Reading, Value  # noqa: E402
from shared.wire import Topics, encode_batch  # noqa: E402
from shared.wire_v3 import dictionary_bytes, dictionary_hash, encode_batch_v3  # noqa: E402
from tests.servers import MosquittoServer, PostgresServer, free_port, wait_for_port  # noqa: E402

DURABLE = (
    " -c fsync=on -c synchronous_commit=on -c shared_buffers=1GB -c max_wal_size=8GB"
    " -c checkpoint_timeout=30min"
)
TOPICS = Topics()
E2E_READINGS = 2_000_000
"""Readings per end-to-end run."""


TagValue = Callable[[int, int], tuple[DataType, Value]]
"""A tag's (data type, value) at a time in microseconds, by the tag's index."""


def make_batches(
    agent: str,
    count: int,
    size: int,
    tags: int,
    start_us: int,
    shaped: dict[int, TagValue] | None = None,
) -> list[tuple[int, bytes]]:
    """`count` batches of `size` float readings cycling over `tags` tags: (batch id, payload).

    Tags whose index is in `shaped` take their type and value from it instead.
    """
    names = [f"t{i:05d}" for i in range(tags)]
    shaped = shaped or {}
    out = []
    seq = 1
    for _ in range(count):
        readings = []
        for i in range(size):
            index, ts_us = (seq + i) % tags, start_us + (seq + i) * 1000
            kind, value = (
                shaped[index](index, ts_us)
                if index in shaped
                else (DataType.FLOAT64, (seq + i) * 0.5)
            )
            readings.append(Reading("machine", names[index], kind, ts_us, value, Quality.GOOD))
        out.append((seq, encode_batch(agent, 1, list(range(seq, seq + size)), readings)))
        seq += size
    return out


def make_batches_v3(
    agent: str, count: int, size: int, tags: int, start_us: int
) -> list[tuple[int, bytes]]:
    """`count` version 3 batches of `size` float readings, one block per poll of `tags` tags."""
    names = [f"t{i:05d}" for i in range(tags)]
    dictionary = dictionary_bytes([("machine", name, DataType.FLOAT64.value) for name in names])
    dict_hash = dictionary_hash(dictionary)
    out = []
    seq = 1
    for number in range(count):
        blocks = []
        for first in range(seq, seq + size, tags):
            poll = [
                Reading(
                    "machine",
                    names[i % tags],
                    DataType.FLOAT64,
                    start_us + (first // tags) * 1000,
                    (first + i) * 0.5,
                    Quality.GOOD,
                )
                for i in range(min(tags, seq + size - first))
            ]
            blocks.append(encode_block(first, poll, lambda r: int(r.tag[1:])))
        payload = encode_batch_v3(
            agent, 1, blocks, dict_hash=dict_hash, dictionary=None if number else dictionary
        )
        out.append((seq, payload))
        seq += size
    return out


class Agents:
    """Simulated agents publishing batches and waiting for the collector's acknowledgements."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.acked: dict[tuple[str, int], float] = {}
        self.waiters: dict[tuple[str, int], asyncio.Future[float]] = {}

    async def listen(self) -> None:
        async for message in self.client.messages():
            agent = TOPICS.agent_of(message.topic)
            now = time.perf_counter()
            ack = decode_ack(message.payload)
            if ack.rejected:
                raise RuntimeError(f"the collector rejected a batch: {ack.rejected[0].error}")
            if ack.dictionary:
                raise RuntimeError(f"the collector lacked the dictionary of {ack.dictionary}")
            for batch_id in ack.stored:
                waiter = self.waiters.pop((agent, batch_id), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(now)

    async def send(self, agent: str, batch_id: int, payload: bytes) -> float:
        """Publish one batch; return the seconds until its acknowledgement."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiters[(agent, batch_id)] = waiter
        sent = time.perf_counter()
        await self.client.publish(TOPICS.batch(agent), payload, timeout=60)
        return await asyncio.wait_for(waiter, 120) - sent


async def end_to_end(
    agents: Agents, work: dict[str, list[tuple[int, bytes]]], window: int
) -> float:
    """Seconds to have every batch acknowledged, each agent keeping `window` in flight."""

    async def one_agent(agent: str, batches: list[tuple[int, bytes]]) -> None:
        queue = iter(batches)

        async def lane() -> None:
            for batch_id, payload in queue:
                await agents.send(agent, batch_id, payload)

        await asyncio.gather(*(lane() for _ in range(window)))

    started = time.perf_counter()
    await asyncio.gather(*(one_agent(a, b) for a, b in work.items()))
    return time.perf_counter() - started


async def fixed_load(agents: Agents, rate: int, seconds: float, size: int) -> list[float]:
    """Latencies (s) of batches of `size` readings offered at `rate` readings/s."""
    names = [f"lat{i}" for i in range(10)]
    per_agent = rate / size / len(names)
    payloads = {
        agent: make_batches(agent, int(per_agent * seconds) + 1, size, 500, int(time.time() * 1e6))
        for agent in names
    }
    latencies: list[float] = []

    async def one_agent(agent: str, offset: float) -> None:
        await asyncio.sleep(offset)
        started = time.perf_counter()
        pending = []
        for i, (batch_id, payload) in enumerate(payloads[agent]):
            due = started + i / per_agent
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            pending.append(asyncio.ensure_future(agents.send(agent, batch_id, payload)))
        latencies.extend(await asyncio.gather(*pending))

    await asyncio.gather(*(one_agent(a, i / per_agent / len(names)) for i, a in enumerate(names)))
    return latencies


def copy_rows_of(database_url: str, work: dict[str, list[tuple[int, bytes]]]) -> list[bytes]:
    """The readings of `work` as binary COPY rows for the copy database, one chunk per batch."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        chunks = []
        for agent, batches in work.items():
            conn.execute(
                "INSERT INTO agents (agent_id) VALUES (%s) ON CONFLICT DO NOTHING", [agent]
            )
            decoded = [decode_batch(payload, agent) for _, payload in batches]
            refs = {ref for batch in decoded for ref in batch.tags.refs}
            for ref in sorted(refs, key=lambda r: r.tag):
                conn.execute(
                    "INSERT INTO tags (agent_id, device, name, data_type) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [agent, ref.device, ref.tag, ref.type.value],
                )
            ids = dict(
                conn.execute(
                    "SELECT name, tag_id FROM tags WHERE agent_id = %s", [agent]
                ).fetchall()
            )
            for batch in decoded:
                tag_ids = np.array([ids[ref.tag] for ref in batch.tags.refs], np.int32)
                chunks.append(encode_rows(batch, tag_ids))
    return chunks


def plain_copy(database_url: str, chunks: list[bytes], connections: int) -> float:
    """Seconds to load the rows with binary COPY on `connections` connections at once."""
    streams = [HEADER + b"".join(chunks[i::connections]) + TRAILER for i in range(connections)]

    def load(stream: bytes, start: threading.Barrier) -> None:
        with psycopg.connect(database_url) as conn:
            start.wait()
            with conn.cursor().copy(COPY_SQL) as copy:
                view = memoryview(stream)
                for offset in range(0, len(stream), 1 << 20):
                    copy.write(view[offset : offset + (1 << 20)])
            conn.commit()

    start = threading.Barrier(connections + 1)
    threads = [threading.Thread(target=load, args=(s, start)) for s in streams]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def empty(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, batches")
        conn.execute("CHECKPOINT")


def migrate(database_url: str) -> None:
    """Apply the collector's migrations and create its partitions, as a collector would."""
    subprocess.run(
        [str(BIN / "plantwire-collector"), "migrate", "--database-url", database_url],
        check=True,
        capture_output=True,
    )

    async def partitions() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await ensure_partitions(conn, datetime.now(UTC).date(), 2)

    asyncio.run(partitions())


def start_collector(
    folder: Path, database_url: str, mqtt_url: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    path = folder / "collector.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "database": {"url": database_url},
                "mqtt": {"url": mqtt_url, "client_id": "bench-collector"},
                "http": {"port": port},
                "collector": {"log_level": "WARNING"},
            }
        )
    )
    process = subprocess.Popen([str(BIN / "plantwire-collector"), "run", "--config", str(path)])
    wait_for_port(port, 60)
    return process, port


async def measure(args: argparse.Namespace, pg: PostgresServer, broker: MosquittoServer) -> None:
    e2e_url, copy_url = pg.url("e2e"), pg.url("copy")
    start_us = int(time.time() * 1e6) - 600_000_000
    per_agent = args.readings // args.agents // args.batch
    work = {
        f"bench{i}": make_batches(f"bench{i}", per_agent, args.batch, args.tags, start_us)
        for i in range(args.agents)
    }
    work_v3 = {
        agent: make_batches_v3(agent, per_agent, args.batch, args.tags, start_us) for agent in work
    }
    total = per_agent * args.agents * args.batch
    v2_bytes = sum(len(p) for batches in work.values() for _, p in batches) / total
    v3_bytes = sum(len(p) for batches in work_v3.values() for _, p in batches) / total
    chunks = copy_rows_of(copy_url, work)
    folder = Path(tempfile.mkdtemp(prefix="plantwire-bench-"))
    collector, _ = start_collector(folder, e2e_url, broker.url)
    client = MqttClient(
        MqttSettings(url=broker.url, max_inflight=1000),
        client_id="bench-agents",
        persistent_session=False,
        receive_queue=10_000,
    )
    await client.connect()
    agents = Agents(client)
    listener = asyncio.ensure_future(agents.listen())
    await client.subscribe(TOPICS.all_of("ack"))
    try:
        # A full untimed pass of each side first: the first pass into fresh tables and a cold
        # server ran about 30 % slower, on both sides, in every trial.
        await end_to_end(agents, work, args.window)
        empty(e2e_url)
        await end_to_end(agents, work_v3, args.window)
        empty(copy_url)
        plain_copy(copy_url, chunks, 1)
        e2e_rates, copy_rates, copy2_rates, collector_cpu = [], [], [], []
        e2e_v3_rates, collector_cpu_v3 = [], []
        parts = {"collector": collector.pid, "PostgreSQL": pg.pid(), "Mosquitto": broker.pid}
        parts["agents (this process)"] = os.getpid()
        shares: dict[str, list[float]] = {name: [] for name in parts}
        profile_file = folder / "collector.profile"
        for run in range(args.runs):
            empty(e2e_url)
            before = {name: tree_cpu(pid) for name, pid in parts.items()}
            seconds = await end_to_end(agents, work, args.window)
            for name, pid in parts.items():
                shares[name].append((tree_cpu(pid) - before[name]) / seconds * 100)
            collector_cpu.append(shares["collector"][-1])
            e2e_rates.append(total / seconds)
            with psycopg.connect(e2e_url) as conn:
                stored = conn.execute("SELECT count(*) FROM readings").fetchone()
            if stored is None or stored[0] != total:
                raise RuntimeError(f"the collector stored {stored} readings of {total}")
            empty(e2e_url)
            cpu_before = tree_cpu(collector.pid)
            seconds = await end_to_end(agents, work_v3, args.window)
            collector_cpu_v3.append((tree_cpu(collector.pid) - cpu_before) / seconds * 100)
            e2e_v3_rates.append(total / seconds)
            with psycopg.connect(e2e_url) as conn:
                stored = conn.execute("SELECT count(*) FROM readings").fetchone()
            if stored is None or stored[0] != total:
                raise RuntimeError(f"the collector stored {stored} version 3 readings of {total}")
            empty(copy_url)
            copy_rates.append(total / plain_copy(copy_url, chunks, 1))
            empty(copy_url)
            copy2_rates.append(total / plain_copy(copy_url, chunks, 2))
            print(
                f"run {run + 1}: end to end {e2e_rates[-1]:,.0f} readings/s"
                f" (collector CPU {collector_cpu[-1]:.0f} %),"
                f" version 3 {e2e_v3_rates[-1]:,.0f} readings/s"
                f" (collector CPU {collector_cpu_v3[-1]:.0f} %),"
                f" plain COPY {copy_rates[-1]:,.0f} readings/s"
                f" (on two connections {copy2_rates[-1]:,.0f})",
                flush=True,
            )
        if (BIN / "py-spy").exists():
            # One more run under the profiler, kept out of the figures: sampling costs CPU.
            empty(e2e_url)
            expected = total / statistics.median(e2e_rates)
            spy = profile(collector.pid, max(1.0, expected * 0.9), profile_file)
            await end_to_end(agents, work, args.window)
            spy.wait(60)
        empty(e2e_url)
        latencies = sorted(await fixed_load(agents, args.rate, args.latency_seconds, 500))
    finally:
        listener.cancel()
        await client.close()
        collector.terminate()
        collector.wait(30)
    e2e, copy = statistics.median(e2e_rates), statistics.median(copy_rates)
    copy2 = statistics.median(copy2_rates)
    e2e_v3 = statistics.median(e2e_v3_rates)
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(
        f"{total:,} readings in batches of {args.batch} from {args.agents} agents"
        f" (window {args.window}); medians of {args.runs} runs"
    )
    print("CPU while ingesting end to end, % of one core (the machine has", os.cpu_count(), "):")
    for name, values in shares.items():
        print(f"  {name}: {statistics.median(values):.0f} %")
    if profile_file.exists():
        print("collector profile, own time per function (py-spy, an extra run):")
        print("\n".join(summarise_profile(profile_file)))
    shutil.rmtree(folder, ignore_errors=True)
    ratio = e2e / copy
    print(
        f"end to end: {e2e:,.0f} readings/s; plain COPY: {copy:,.0f} readings/s; ratio {ratio:.2f}"
    )
    print(
        f"version 3 end to end: {e2e_v3:,.0f} readings/s;"
        f" bytes per reading {v3_bytes:.1f} (version 2: {v2_bytes:.1f})"
    )
    print(
        f"at {args.rate:,} readings/s offered ({len(latencies)} batches of 500):"
        f" p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    print(
        f"RESULT e2e_readings_per_s={e2e:.0f} copy_readings_per_s={copy:.0f}"
        f" ratio={e2e / copy:.2f} p50_ms={p50:.0f} p99_ms={p99:.0f}"
        f" copy_2conn_readings_per_s={copy2:.0f} ratio_2conn={e2e / copy2:.2f}"
        f" e2e_v3_readings_per_s={e2e_v3:.0f} ratio_v3={e2e_v3 / copy:.2f}"
        f" collector_cpu_pct={statistics.median(collector_cpu):.0f}"
        f" collector_cpu_v3_pct={statistics.median(collector_cpu_v3):.0f}"
        f" v2_bytes_per_reading={v2_bytes:.1f} v3_bytes_per_reading={v3_bytes:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=E2E_READINGS)
    parser.add_argument("--batch", type=int, default=5000, help="readings per batch")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--window", type=int, default=8, help="batches in flight per agent")
    parser.add_argument("--tags", type=int, default=2000, help="tags per agent")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=50_000, help="fixed offered readings/s")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    args = parser.parse_args()
    pg = PostgresServer(options=DURABLE)
    broker = MosquittoServer()
    try:
        pg.start()
        broker.start()
        for name in ("e2e", "copy"):
            with psycopg.connect(pg.url(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            migrate(pg.url(name))
        asyncio.run(measure(args, pg, broker))
    finally:
        broker.stop()
        pg.remove()


if __name__ == "__main__":
    main()
