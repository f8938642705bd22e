"""make bench-buffer: spool rate into the SQLite buffer, and drain rate of a backlog to PostgreSQL.

Spool: readings committed per second with synchronous=FULL, in transactions of one poll's size.
Drain: a buffer holding a backlog is forwarded by the real forwarder (end-to-end acknowledged)
through Mosquitto to a collector process writing to PostgreSQL; readings/s until the last one
is confirmed. Each figure is the median of --runs runs.
"""

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.buffer import SqliteBuffer  # noqa: E402
from agent.config import ForwardSettings  # noqa: E402
from agent.forwarder import Forwarder  # noqa: E402
from shared.clock import SystemClock  # noqa: E402
from shared.mqtt import MqttClient, MqttSettings  # noqa: E402
from shared.readings import DataType, Quality, Reading  # noqa: E402
from shared.wire import Topics  # noqa: E402
from tests.servers import free_port, running_mosquitto, running_postgres  # noqa: E402

BIN = Path(sys.executable).parent
START_US = 1_795_000_000_000_000


def polls(total: int, per_poll: int) -> list[list[Reading]]:
    """Readings shaped like real polls: 100 tags of mixed types, ten polls a second."""
    out = []
    kinds = [
        (DataType.FLOAT32, 21.5),
        (DataType.UINT32, 4_000_123),
        (DataType.BOOL, True),
        (DataType.INT16, -12),
    ]
    for start in range(0, total, per_poll):
        poll = []
        for i in range(start, min(total, start + per_poll)):
            data_type, value = kinds[i % len(kinds)]
            poll.append(
                Reading(
                    "press",
                    f"tag{i % 100:03d}",
                    data_type,
                    START_US + (i // 100) * 100_000,
                    value,
                    Quality.GOOD,
                )
            )
        out.append(poll)
    return out


async def spool(path: Path, batches: list[list[Reading]]) -> float:
    buffer = SqliteBuffer(path, max_bytes=None)
    await buffer.open()
    started = time.perf_counter()
    for batch in batches:
        await buffer.add(batch)
    elapsed = time.perf_counter() - started
    await buffer.close()
    return sum(len(b) for b in batches) / elapsed


async def drain(path: Path, total: int, mqtt_url: str, database_url: str) -> float:
    buffer = SqliteBuffer(path, max_bytes=None)
    await buffer.open()
    client = MqttClient(
        MqttSettings(url=mqtt_url, topic_prefix="bench"),
        client_id="bench-agent",
        persistent_session=False,
    )
    topics = Topics("bench")
    client.keep_subscribed(topics.ack("bench"))
    await client.connect()
    forwarder = Forwarder(
        buffer,
        client,
        agent_id="bench",
        topics=topics,
        clock=SystemClock(),
        settings=ForwardSettings(batch_max_readings=5000, window=8, linger=0, ack_timeout="60s"),
    )

    async def acks() -> None:
        async for message in client.messages():
            await forwarder.handle_ack(message.payload)

    started = time.perf_counter()
    tasks = [asyncio.create_task(forwarder.run()), asyncio.create_task(acks())]
    while forwarder.readings_acknowledged < total:  # noqa: ASYNC110 - a counter, no event
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    await buffer.close()
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert stored == (total,), f"stored {stored} of {total}"
    return total / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spool", type=int, default=1_000_000, help="readings per spool run")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="readings to drain")
    parser.add_argument("--per-poll", type=int, default=1000, help="readings per transaction")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    batches = polls(args.spool, args.per_poll)
    backlog = polls(args.backlog, args.per_poll)
    spool_rates, drain_rates = [], []
    with (
        tempfile.TemporaryDirectory(prefix="plantwire-bench-") as tmp,
        running_postgres() as postgres,
        running_mosquitto() as broker,
    ):
        for run in range(args.runs):
            rate = asyncio.run(spool(Path(tmp) / f"spool{run}.sqlite", batches))
            spool_rates.append(rate)
            print(f"spool run {run + 1}: {rate:,.0f} readings/s", flush=True)
        for run in range(args.runs):
            database = f"drain{run}"
            with psycopg.connect(postgres.url(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {database}")
            path = Path(tmp) / f"drain{run}.sqlite"
            asyncio.run(spool(path, backlog))
            config = Path(tmp) / f"collector{run}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "collector": {"log_level": "WARNING"},
                        "database": {"url": postgres.url(database)},
                        "mqtt": {
                            "url": broker.url,
                            "topic_prefix": "bench",
                            "client_id": f"c{run}",
                        },
                        "http": {"port": free_port()},
                    }
                )
            )
            collector = subprocess.Popen(
                [str(BIN / "plantwire-collector"), "run", "--config", str(config)]
            )
            try:
                time.sleep(3)
                rate = asyncio.run(drain(path, args.backlog, broker.url, postgres.url(database)))
            finally:
                collector.terminate()
                collector.wait(timeout=30)
            drain_rates.append(rate)
            print(
                f"drain run {run + 1}: {rate:,.0f} readings/s ({args.backlog:,} backlog)",
                flush=True,
            )
    print(
        f"RESULT spool_readings_per_s={statistics.median(spool_rates):.0f}"
        f" drain_readings_per_s={statistics.median(drain_rates):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
