"""make bench-events: how fast one collector streams events to many clients, what a client costs.

Servers: PostgreSQL and Mosquitto from Debian, on free ports, and one real collector process
(`plantwire-collector run`). --clients Server-Sent Events clients (200) connect to it with a
viewer key. Events are appended to the events table as producers append them (collector/events.py,
one transaction per tenth of a second), at offered rates that step up (--rates), each for
--seconds. For each step it prints the rate every client received, the deliveries per second
the collector made (events x clients), clients dropped as too slow, and the collector's CPU.
The step with the highest rate all clients kept up with, none dropped, is the result.

Memory: the collector's resident memory with no client, then with every client connected and
idle, after a full collection; their difference divided by the clients is what one idle client
holds. A client that stops reading holds at most `stream.client_queue` events more (1,000 by
default) before it is dropped: that bound is measured too, with clients that never read.

Alerts: --agents simulated agents (4) publish a batch every second of --tags tags each (500)
polled at 1 Hz, over MQTT in the agents' wire format, as agents polling at 1 Hz forward; one
tag crosses a threshold every ten seconds (above for five, then back). A rule on it fires an
alert, whose `alert.firing` event goes to a webhook receiver in this process (verifying each
signature). The latency of each alert is from the reading that crossed (its timestamp, the
alert's `fired_at`) to the webhook's arrival: batching at the agent, the broker, ingest, the
evaluation, the outbox and the delivery. --crossings of them (40) give p50 and p99.
"""

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web
from standardwebhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.analytics_bench import start_collector
from bench.api_bench import add_key
from bench.processes import BIN, Children, cpu_seconds
from collector.events import Event, append_events
from shared.mqtt import MqttClient, MqttSettings
from shared.readings import DataType, Quality, Reading
from shared.wire import Topics, encode_batch
from tests.servers import MosquittoServer, PostgresServer, free_port

TICK_S = 0.1
"""Producers append every tenth of a second, one transaction each time."""
BODY = {
    "site": "plant-1",
    "machine": "press-07",
    "state": "running",
    "previous": "idle",
    "reason": None,
    "since": "2026-11-27T10:00:00.000000Z",
}
"""A body the size of a machine.state event's."""


def rss_mb(pid: int) -> float:
    """A process's resident memory now (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass
class Client:
    """One stream client: counts the events it receives with ids above `after`."""

    after: int = 0
    received: int = 0
    dropped: bool = False
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, text: bytes) -> None:
        """Count the events in a piece of the stream."""
        ids = EVENT_ID.findall(text)
        if ids and int(ids[0]) > self.after:
            self.received += len(ids)
        else:
            self.received += sum(1 for i in ids if int(i) > self.after)
        self.dropped = self.dropped or b"event: dropped" in text


EVENT_ID = re.compile(rb"\nid: (\d+)\r\n")


async def follow(session: aiohttp.ClientSession, url: str, client: Client, read: bool) -> None:
    """Stream from `url` until cancelled; with `read` false, never read after connecting."""
    async with session.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"stream answered {response.status}: {await response.text()}")
        client.connected.set()
        if not read:
            await asyncio.Event().wait()  # holds the connection, reads nothing
        # What follows the last line break is kept for the next piece: it holds one line break,
        # too few for a whole "\nid: N\r\n", so no event is counted twice.
        tail = b"\n"
        async for chunk in response.content.iter_any():
            text = tail + chunk
            client.take(text)
            tail = text[text.rfind(b"\n") :]


async def produce(url: str, rate: float, seconds: float) -> int:
    """Append events at `rate` per second for `seconds`; return how many."""
    per_tick = max(1, round(rate * TICK_S))
    appended = 0
    async with await psycopg.AsyncConnection.connect(url) as conn:
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds:
            async with conn.transaction():
                await append_events(
                    conn,
                    [
                        Event(kind="bench.tick", subject="press-07", role="viewer", body=BODY)
                        for _ in range(per_tick)
                    ],
                )
            appended += per_tick
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))
    return appended


async def connect(
    base: str, key: str, count: int, read: bool
) -> tuple[aiohttp.ClientSession, list[Client], list[asyncio.Task[None]]]:
    """`count` clients streaming from the collector, each on its own connection."""
    session = aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {key}"},
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
    )
    clients = [Client() for _ in range(count)]
    tasks = [
        asyncio.create_task(follow(session, f"{base}/api/v1/stream?kinds=bench.tick", c, read))
        for c in clients
    ]
    async with asyncio.timeout(60):
        await asyncio.gather(*(c.connected.wait() for c in clients))
    return session, clients, tasks


async def disconnect(session: aiohttp.ClientSession, tasks: list[asyncio.Task[None]]) -> None:
    """Stop every client and close their connections."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task
    await session.close()


async def settle(clients: list[Client], expected: int, timeout: float) -> float:
    """Wait until every client not dropped has `expected` events; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(c.dropped or c.received >= expected for c in clients):
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def fan_out(
    base: str, key: str, url: str, pid: int, clients_n: int, rates: list[float], seconds: float
) -> list[dict[str, float]]:
    """Each offered rate in turn to `clients_n` reading clients; figures per step."""
    steps = []
    for rate in rates:
        await quiet(pid)
        session, clients, tasks = await connect(base, key, clients_n, read=True)
        try:
            after = await last_id(url)
            for client in clients:
                client.after = after
            cpu = cpu_seconds(pid)
            start = time.monotonic()
            appended = await produce(url, rate, seconds)
            produced_s = time.monotonic() - start
            tail_s = await settle(clients, appended, timeout=max(30.0, seconds))
            elapsed = time.monotonic() - start
            cpu = cpu_seconds(pid) - cpu
        finally:
            await disconnect(session, tasks)
        kept = [c for c in clients if not c.dropped]
        received = sum(c.received for c in clients)
        complete = sum(1 for c in kept if c.received >= appended)
        step = {
            "offered": appended / produced_s,
            "per_client": statistics.median(c.received for c in clients) / elapsed,
            "deliveries": received / elapsed,
            "dropped": float(clients_n - len(kept)),
            "complete": float(complete),
            "tail_s": tail_s,
            "cpu_pct": 100 * cpu / elapsed,
        }
        steps.append(step)
        print(
            f"offered {step['offered']:>7,.0f} events/s:"
            f" each client got {step['per_client']:>7,.0f}/s"
            f" (all {appended:,}: {complete}/{clients_n} clients), {step['deliveries']:>9,.0f}"
            f" deliveries/s, dropped {step['dropped']:.0f}, last event {tail_s:.2f} s after the"
            f" producer stopped, collector CPU {step['cpu_pct']:.0f} %",
            flush=True,
        )
    return steps


async def last_id(url: str) -> int:
    """The newest event's id."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT coalesce(max(id), 0) FROM events")
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def quiet(pid: int, timeout: float = 60.0) -> None:
    """Wait until the collector uses under a tenth of a core (what an earlier step left is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu = cpu_seconds(pid)
        await asyncio.sleep(1)
        if cpu_seconds(pid) - cpu < 0.1:
            return


async def memory(
    base: str, key: str, url: str, pid: int, clients_n: int, queue: int
) -> tuple[float, float]:
    """MiB one idle client holds, and one that never reads with its queue full."""
    await asyncio.sleep(2)
    empty = rss_mb(pid)
    session, _, tasks = await connect(base, key, clients_n, read=True)
    try:
        await asyncio.sleep(2)
        idle = (rss_mb(pid) - empty) / clients_n
    finally:
        await disconnect(session, tasks)
    await asyncio.sleep(2)
    before = rss_mb(pid)
    session, clients, tasks = await connect(base, key, clients_n, read=False)
    try:
        # Each event queued for every client; well past what the socket buffers take, so the
        # queues fill up to the bound (then the clients are dropped).
        await produce(url, queue * 10 / 2, 2)
        await asyncio.sleep(1)
        stuck = (rss_mb(pid) - before) / clients_n
    finally:
        await disconnect(session, tasks)
    del clients
    return idle, stuck


class Hooks:
    """A webhook receiver: when each alert.firing arrived, and the alert's fired_at."""

    def __init__(self) -> None:
        self.port = free_port()
        self.secret = ""
        self.latencies: list[float] = []
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        arrival = time.time()
        body = await request.read()
        Webhook(self.secret).verify(body, dict(request.headers))  # raises if it does not
        alert = json.loads(body)["data"]["body"]
        fired = datetime.fromisoformat(alert["fired_at"]).timestamp()
        self.latencies.append(arrival - fired)
        self.arrived.set()
        return web.Response(status=204)

    async def __aenter__(self) -> "Hooks":
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def api(session: aiohttp.ClientSession, method: str, url: str, body: Any) -> Any:
    """An API call that must succeed; its JSON answer."""
    async with session.request(method, url, json=body) as response:
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {await response.text()}")
        return await response.json()


async def publish_agents(
    client: MqttClient, agents: int, tags: int, crossing: asyncio.Event, stop: asyncio.Event
) -> None:
    """Every second, a batch of each agent's readings of that second; the crossing tag of
    agent 0 (device `press`, tag `t0000`) reads 95 while `crossing` is set, else 50."""
    names = [f"t{i:04d}" for i in range(tags)]
    seq = {f"line-{a}": 1 for a in range(agents)}
    tick = time.monotonic()
    while not stop.is_set():
        now_us = int(time.time() * 1e6)
        for agent in seq:
            readings = [
                Reading(
                    "press",
                    name,
                    DataType.FLOAT64,
                    now_us,
                    (95.0 if crossing.is_set() else 50.0)
                    if agent == "line-0" and i == 0
                    else float(i % 70),
                    Quality.GOOD,
                )
                for i, name in enumerate(names)
            ]
            first = seq[agent]
            seq[agent] += len(readings)
            payload = encode_batch(agent, 1, list(range(first, seq[agent])), readings)
            await client.publish(Topics().batch(agent), payload, timeout=30)
        tick += 1.0
        await asyncio.sleep(max(0.0, tick - time.monotonic()))


async def alert_latency(
    base: str, admin: str, broker: str, agents: int, tags: int, crossings: int
) -> list[float]:
    """Seconds from each crossing reading to its webhook, the first two left out (warm-up)."""
    crossing, stop = asyncio.Event(), asyncio.Event()
    client = MqttClient(
        MqttSettings(url=broker), client_id="bench-alert-agents", persistent_session=False
    )
    await client.connect()
    async with (
        Hooks() as hooks,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session,
    ):
        endpoint = await api(
            session,
            "POST",
            f"{base}/api/v1/webhooks",
            {"url": f"http://127.0.0.1:{hooks.port}/hook", "kinds": ["alert.firing"]},
        )
        hooks.secret = endpoint["secret"]
        condition = {
            "kind": "tag_threshold",
            "agent": "line-0",
            "device": "press",
            "tag": "t0000",
            "direction": "above",
            "threshold": 90,
            "clear_threshold": 80,
        }
        await api(
            session,
            "POST",
            f"{base}/api/v1/alert-rules",
            {"name": "bench: press too hot", "condition": condition},
        )
        publisher = asyncio.create_task(publish_agents(client, agents, tags, crossing, stop))
        try:
            for n in range(crossings + 2):
                await asyncio.sleep(5)
                hooks.arrived.clear()
                crossing.set()
                async with asyncio.timeout(60):
                    await hooks.arrived.wait()
                await asyncio.sleep(5 - min(5.0, hooks.latencies[-1]))
                crossing.clear()
                if n % 10 == 9:
                    print(f"  {n + 1} alerts", flush=True)
        finally:
            stop.set()
            await publisher
            await client.close()
    return hooks.latencies[2:]


@contextlib.contextmanager
def servers() -> Iterator[tuple[PostgresServer, MosquittoServer]]:
    """PostgreSQL and Mosquitto, stopped and removed afterwards."""
    postgres = PostgresServer(" -c fsync=off")
    broker = MosquittoServer()
    try:
        postgres.start()
        broker.start()
        yield postgres, broker
    finally:
        broker.stop()
        postgres.remove()


def stream_collector(
    children: Children, folder: Path, url: str, broker: str, queue: int
) -> tuple[str, int]:
    """A collector process with the stream open to many clients; its base URL and pid."""
    port = free_port()
    config = folder / "collector.yaml"
    config.write_text(
        f"database:\n  url: {url}\n  pool_size: 8\n"
        f"mqtt:\n  url: {broker}\n  client_id: bench-events\n"
        f"http:\n  host: 127.0.0.1\n  port: {port}\n"
        "rate_limits:\n  enabled: false\n"
        f"stream:\n  max_clients: 2000\n  client_queue: {queue}\n"
        "collector:\n  log_level: WARNING\n"
    )
    process = start_collector(children, config, port, folder / "collector.log")
    return f"http://127.0.0.1:{port}", process.pid


def nearest_rank(values: list[float], share: float) -> float:
    """The value at `share` of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="stream clients (200)")
    parser.add_argument(
        "--rates",
        default="100,250,500,1000,2000,4000",
        help="offered events/s, in turn (100,250,500,1000,2000,4000)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step (10)")
    parser.add_argument("--queue", type=int, default=1000, help="stream.client_queue (1000)")
    parser.add_argument("--agents", type=int, default=4, help="agents publishing (4)")
    parser.add_argument("--tags", type=int, default=500, help="tags per agent at 1 Hz (500)")
    parser.add_argument("--crossings", type=int, default=40, help="alerts timed (40)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with (
        servers() as (postgres, broker),
        Children() as children,
        tempfile.TemporaryDirectory(prefix="plantwire-events-") as tmp,
    ):
        url = postgres.url()
        subprocess.run(
            [str(BIN / "plantwire-collector"), "migrate", "--database-url", url],
            check=True,
            capture_output=True,
        )
        key = add_key(url)
        base, pid = stream_collector(children, Path(tmp), url, broker.url, args.queue)
        print(f"stream: {args.clients} clients of one collector, {args.seconds:g} s per step")
        # Memory first: the process has not yet held (and freed) the memory of other clients.
        idle_mb, stuck_mb = asyncio.run(memory(base, key, url, pid, args.clients, args.queue))
        steps = asyncio.run(fan_out(base, key, url, pid, args.clients, rates, args.seconds))
        print(
            f"alerts: {args.agents} agents x {args.tags} tags at 1 Hz,"
            f" {args.crossings} threshold crossings"
        )
        admin = add_key(url, "admin")
        latencies = asyncio.run(
            alert_latency(base, admin, broker.url, args.agents, args.tags, args.crossings)
        )
    p50, p99 = nearest_rank(latencies, 0.5), nearest_rank(latencies, 0.99)
    print(
        f"reading over the threshold to its webhook: p50 {p50 * 1000:.0f} ms,"
        f" p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms ({len(latencies)} alerts)"
    )
    kept = [s for s in steps if s["dropped"] == 0 and s["complete"] == args.clients]
    best = max(kept, key=lambda s: s["per_client"]) if kept else None
    print(
        f"memory per client: {idle_mb * 1024:.0f} KiB idle; {stuck_mb * 1024:.0f} KiB for one"
        f" that reads nothing, at most {args.queue} events queued before it is dropped"
    )
    if best is None:
        print("no step kept every client", file=sys.stderr)
        return 1
    print(
        f"RESULT stream_events_per_s={best['per_client']:.0f}"
        f" stream_deliveries_per_s={best['deliveries']:.0f} stream_clients={args.clients}"
        f" client_idle_kib={idle_mb * 1024:.0f} client_full_queue_kib={stuck_mb * 1024:.0f}"
        f" alert_webhook_p50_ms={p50 * 1000:.0f} alert_webhook_p99_ms={p99 * 1000:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
