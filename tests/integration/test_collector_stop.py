"""The collector shuts down within its grace period whatever is down, leaving no thread behind."""

import asyncio
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from shared.mqtt import MqttClient, MqttSettings
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.faults.plant import create_database
from tests.harness import add_test_key, collector_config, eventually, get_json, running_collector
from tests.servers import MosquittoServer, PostgresServer, free_port

GRACE_S = 15.0
"""The tasks' 10 s, then the broker link and the database pool."""


def batch(first: int) -> bytes:
    readings = [Reading("press", "temp", DataType.FLOAT64, 1_790_000_000_000_000 + first, 1.0)]
    return encode_batch("a1", 1, [first], readings)


def paho_threads(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if prefix in t.name]


@pytest.mark.parametrize("down", ["database", "broker", "both"])
async def test_shutdown_within_the_grace_whatever_is_down(down: str, topic_prefix: str) -> None:
    postgres = PostgresServer()
    broker = MosquittoServer(port=free_port())
    await asyncio.to_thread(postgres.start)
    broker.start()
    try:
        create_database(postgres, "stop_test")
        config = collector_config(
            database_url=postgres.url("stop_test"),
            mqtt_url=broker.url,
            prefix=topic_prefix,
            client_id=f"{topic_prefix}-c",
        )
        stops: dict[str, Callable[[], None]] = {
            "database": lambda: postgres.stop("immediate"),
            "broker": broker.kill,
        }
        publisher = MqttClient(
            MqttSettings(url=broker.url), client_id=f"{topic_prefix}-p", persistent_session=False
        )
        async with running_collector(config) as base:
            await asyncio.to_thread(_with_test_key, postgres.url("stop_test"))
            await publisher.connect()
            await publisher.publish(f"{topic_prefix}/v1/a1/batch", batch(1), timeout=5)

            async def stored() -> bool:
                status, body = await get_json(f"{base}/api/v1/agents/a1")
                return status == 200 and body["last_seen"] is not None

            await eventually(stored, what="the first batch stored")
            if down in ("database", "both"):
                await asyncio.to_thread(stops["database"])
                # A batch now waits in a write that retries until the database returns.
                await publisher.publish(f"{topic_prefix}/v1/a1/batch", batch(2), timeout=5)
                await asyncio.sleep(0.5)
            await publisher.close()
            if down in ("broker", "both"):
                stops["broker"]()
            started = time.monotonic()
        took = time.monotonic() - started
        assert took < GRACE_S, f"shutdown took {took:.1f} s"

        # paho's network thread is joined by close(); the helper thread that joined it may
        # take a moment more to end.
        async def threads_gone() -> bool:
            return not paho_threads(f"{topic_prefix}-c")

        await eventually(threads_gone, timeout=2, what="the collector's MQTT threads to end")
    finally:
        broker.stop()
        await asyncio.to_thread(postgres.remove)


def _with_test_key(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        add_test_key(conn)
