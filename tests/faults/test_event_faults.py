"""Faults on the paths of events: stream clients and webhook receivers of two collector
processes, while replicas are killed and restarted and a receiver is down for minutes."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import psycopg
import pytest
from pymodbus.client import AsyncModbusTcpClient

from collector.events import Event, append_events
from tests.faults.plant import Plant
from tests.harness import AUTH, TEST_KEY, add_test_key
from tests.receiver import Receiver
from tests.sse_client import streaming

KIND = "fault.tick"
OUTAGE_S = 120.0
"""How long the webhook receiver is down."""


async def started(plant: Plant, *indexes: int) -> None:
    """Start collectors and wait until each answers as healthy."""
    for index in indexes:
        plant.start_collector(index)
    for index in indexes:
        await healthy(plant, index)


async def healthy(plant: Plant, index: int) -> None:
    """Wait until a collector answers /healthz with 200."""

    def answers() -> bool:
        try:
            return plant.collector_health(index)[0] == 200
        except OSError:  # not listening yet
            return False

    await plant.wait_until(answers, 60, f"collector {index} healthy")


class Producer:
    """Appends one event every `every` seconds, in a transaction of its own, as producers do."""

    def __init__(self, url: str, every: float) -> None:
        self.url = url
        self.every = every
        self.ids: list[int] = []

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            while True:
                async with conn.transaction():
                    event = Event(kind=KIND, subject="s", role="viewer", body={"n": len(self.ids)})
                    self.ids += await append_events(conn, [event])
                await asyncio.sleep(self.every)


@contextlib.asynccontextmanager
async def producing(url: str, every: float) -> AsyncIterator[Producer]:
    """A producer running for the block."""
    producer = Producer(url, every)
    task = asyncio.create_task(producer.run())
    try:
        yield producer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Follower:
    """A stream client that reconnects to whichever replica it is told, with Last-Event-ID."""

    def __init__(self, plant: Plant) -> None:
        self.plant = plant
        self.replica = 1
        self.ids: list[int] = []
        self.connections = 0
        self.endings: list[str] = []

    async def run(self) -> None:
        while True:
            # From the start (id 0) the first time: every event the producer appends is wanted.
            headers = {"Last-Event-ID": str(self.ids[-1] if self.ids else 0)}
            try:
                async with streaming(
                    self.plant.collector_url(self.replica), TEST_KEY, headers, kinds=KIND
                ) as sse:
                    self.connections += 1
                    while True:
                        event = await sse.event(timeout=30)
                        if event.get("event") == "dropped":
                            self.endings.append(event["data"]["reason"])
                            break
                        self.ids.append(int(event["id"]))
            except (EOFError, aiohttp.ClientError, AssertionError) as exc:
                # The replica died (the connection ends, or a new one is refused): try again.
                self.endings.append(type(exc).__name__)
            await asyncio.sleep(0.2)

    async def got(self, count: int, timeout: float = 60) -> None:
        """Wait for `count` more events than now."""
        target = len(self.ids) + count
        await self.plant.wait_until(lambda: len(self.ids) >= target, timeout, f"{count} events")


async def test_a_stream_client_resumes_across_replica_restarts_without_a_gap(
    plant_factory: type[Plant],
) -> None:
    plant = plant_factory()
    plant.start_broker()
    await started(plant, 1, 2)
    with psycopg.connect(plant.database_url, autocommit=True) as conn:
        add_test_key(conn)
    follower = Follower(plant)
    task = asyncio.create_task(follower.run())
    try:
        async with producing(plant.database_url, 0.02) as producer:
            await follower.got(50)
            follower.replica = 2
            plant.kill("collector")  # no goodbye: the connection just ends
            await follower.got(100)
            await started(plant, 1)
            follower.replica = 1
            plant.stop("collector2")  # a clean stop: its clients are told, and resume
            await follower.got(100)
        last = producer.ids[-1]
        await plant.wait_until(lambda: follower.ids[-1] >= last, 30, "the last event")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert follower.ids == producer.ids  # every event once, in order, across three connections
    assert follower.connections >= 3
    assert "shutdown" in follower.endings


async def add_endpoint(
    base: str, receiver: Receiver, path: str, kinds: tuple[str, ...] = (KIND,)
) -> None:
    """An endpoint for the receiver's `path`; the receiver learns its secret."""
    url = receiver.url.replace("/hook", path)
    body = {"url": url, "kinds": list(kinds)}
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(f"{base}/api/v1/webhooks", json=body) as response,
    ):
        assert response.status == 201, await response.text()
        receiver.secrets.append((await response.json())["secret"])


def delivered_ids(receiver: Receiver, path: str) -> list[int]:
    """Event ids the receiver accepted at `path`, each the first time, in arrival order."""
    seen: list[int] = []
    for delivery in receiver.delivered(path):
        event_id = int(delivery.payload["data"]["id"])
        if event_id not in seen:
            seen.append(event_id)
    return seen


@pytest.mark.timeout(OUTAGE_S * 3)
async def test_a_webhook_receiver_down_for_minutes_loses_nothing_and_keeps_order(
    plant_factory: type[Plant],
) -> None:
    webhooks = {
        "timeout": "2s",
        "retry_delays": ["1s", "2s", "5s", "10s"],
        "poll_interval": "200ms",
    }
    plant = plant_factory(collector_sections={"webhooks": webhooks})
    plant.start_broker()
    await started(plant, 1, 2)
    with psycopg.connect(plant.database_url, autocommit=True) as conn:
        add_test_key(conn)
    down, up = Receiver(), Receiver()
    await down.start()
    await up.start()
    try:
        base = plant.collector_url(1)
        await add_endpoint(base, down, "/down")
        await add_endpoint(base, up, "/up")
        async with producing(plant.database_url, 0.1) as producer:
            await plant.wait_until(lambda: len(producer.ids) >= 10, 30, "events")
            await down.stop()
            outage = time.monotonic()
            await asyncio.sleep(OUTAGE_S / 3)
            plant.kill("collector2")  # mid-outage, maybe holding a lease: it runs out
            await started(plant, 2)
            await asyncio.sleep(max(0.0, outage + OUTAGE_S - time.monotonic()))
            # The healthy endpoint was not held back by the one that is down.
            assert len(delivered_ids(up, "/up")) >= len(producer.ids) - 50
            await down.start()
            await asyncio.sleep(2)
        produced = list(producer.ids)
        await caught_up(plant, down, "/down", produced)
        await caught_up(plant, up, "/up", produced)
    finally:
        await up.stop()
        with contextlib.suppress(RuntimeError):  # stopped already when the outage failed
            await down.stop()


async def caught_up(plant: Plant, receiver: Receiver, path: str, produced: list[int]) -> None:
    """Wait until the receiver has every event; they came in order, each first time once."""
    await plant.wait_until(
        lambda: len(delivered_ids(receiver, path)) >= len(produced),
        OUTAGE_S,
        f"everything delivered to {path}",
    )
    assert delivered_ids(receiver, path) == produced


SETPOINT = {"name": "setpoint", "table": "holding_register", "address": 20, "type": "uint16"}
"""A writable register of the simulator that it leaves as written: the test sets the value."""
HIGH, LOW = 16_000, 12_000


async def set_setpoint(plant: Plant, value: int) -> None:
    """Write the setpoint register over Modbus, as an operator panel would."""
    client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=5)
    await client.connect()
    try:
        result = await client.write_register(20, value)
        assert not result.isError(), result
    finally:
        client.close()


def owns_alerts(plant: Plant, index: int) -> bool:
    """Whether collector `index` says it evaluates the alert rules."""
    try:
        return plant.collector_metric(index, "plantwire_collector_alert_owner").get("") == 1.0
    except OSError:  # not running
        return False


def alert_ids(receiver: Receiver, kind: str) -> list[str]:
    """Alert ids of the receiver's accepted webhooks of one kind, each the first time."""
    seen: list[str] = []
    for delivery in receiver.delivered("/alerts"):
        payload = delivery.payload
        if payload["type"] == kind and payload["data"]["body"]["id"] not in seen:
            seen.append(payload["data"]["body"]["id"])
    return seen


@pytest.mark.timeout(300)
async def test_the_alert_owner_killed_mid_episode_another_takes_over_without_duplicate_or_miss(
    plant_factory: type[Plant],
) -> None:
    webhooks = {"timeout": "2s", "retry_delays": ["500ms", "1s"], "poll_interval": "200ms"}
    plant = plant_factory(
        extra_tags=[SETPOINT],
        collector_sections={"webhooks": webhooks, "alerts": {"lock_retry": "1s"}},
    )
    plant.start_simulator()
    await set_setpoint(plant, LOW)
    plant.start_broker()
    await started(plant, 1, 2)
    plant.start_agent()
    with psycopg.connect(plant.database_url, autocommit=True) as conn:
        add_test_key(conn)
    receiver = Receiver()
    await receiver.start()
    try:
        base = plant.collector_url(1)
        await add_endpoint(base, receiver, "/alerts", ("alert.firing", "alert.resolved"))
        condition = {
            "kind": "tag_threshold",
            "agent": "line1",
            "device": "press",
            "tag": "setpoint",
            "direction": "above",
            "threshold": 15_000,
            "clear_threshold": 13_000,
        }
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.post(
                f"{base}/api/v1/alert-rules", json={"name": "setpoint", "condition": condition}
            ) as response,
        ):
            assert response.status == 201, await response.text()
            rule = (await response.json())["id"]
        await plant.wait_until(
            lambda: [owns_alerts(plant, i) for i in (1, 2)].count(True) == 1, 30, "one owner"
        )
        owner = 1 if owns_alerts(plant, 1) else 2

        async def episode(number: int, kind: str) -> None:
            await set_setpoint(plant, HIGH if kind == "alert.firing" else LOW)
            await plant.wait_until(
                lambda: len(alert_ids(receiver, kind)) >= number, 90, f"{kind} of episode {number}"
            )

        await episode(1, "alert.firing")
        await episode(1, "alert.resolved")
        await episode(2, "alert.firing")
        plant.kill("collector" if owner == 1 else "collector2")  # mid-episode, no goodbye
        # Episode 2 ends and episode 3 comes and goes while the owner is gone or just replaced.
        await set_setpoint(plant, LOW)
        await asyncio.sleep(1.5)
        await set_setpoint(plant, HIGH)
        await asyncio.sleep(1.5)
        await set_setpoint(plant, LOW)
        other = 3 - owner
        await plant.wait_until(lambda: owns_alerts(plant, other), 30, "the other taking over")
        await plant.wait_until(
            lambda: len(alert_ids(receiver, "alert.resolved")) >= 3, 90, "episode 3 resolved"
        )
        await episode(4, "alert.firing")
        await episode(4, "alert.resolved")
        await asyncio.sleep(3)  # any duplicate would arrive by now
        fired, resolved = alert_ids(receiver, "alert.firing"), alert_ids(receiver, "alert.resolved")
        assert len(fired) == len(set(fired)) == 4
        assert resolved == fired  # each episode ended once, in order
        ids = [d.webhook_id for d in receiver.delivered("/alerts")]
        assert len(set(ids)) == 8  # one message per change (a redelivery keeps its id)
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(
                f"{plant.collector_url(other)}/api/v1/alerts", params={"rule": rule}
            ) as response,
        ):
            alerts = (await response.json())["items"]
        assert len(alerts) == 4
        assert all(a["state"] == "resolved" and a["fired_at"] for a in alerts)
        assert len({a["started_at"] for a in alerts}) == 4
    finally:
        await receiver.stop()
