"""Readings polled while the broker is away are buffered and delivered once it is back."""

import asyncio
import contextlib
from pathlib import Path

import psycopg

from agent.service import AgentService
from protocols.simulator.runner import Simulator
from tests.buffer_file import held_seqs
from tests.harness import (
    agent_config,
    collector_config,
    eventually,
    modbus_device,
    running_collector,
)
from tests.servers import MosquittoServer, free_port


def stored_readings(database_url: str) -> tuple[int, int, bool]:
    """Rows, distinct (tag, seq) pairs, and whether seq and ts rise together per tag."""
    with psycopg.connect(database_url) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (tag_id, seq)) FROM readings"
        ).fetchone() or (0, 0)
        ordered = conn.execute(
            "SELECT coalesce(bool_and(ts >= previous_ts), true) FROM (SELECT ts,"
            " lag(ts) OVER (PARTITION BY tag_id ORDER BY seq) AS previous_ts FROM readings) AS s"
            " WHERE previous_ts IS NOT NULL"
        ).fetchone()
    return rows, distinct, bool(ordered and ordered[0])


async def test_agent_buffers_until_the_broker_appears_then_delivers_each_reading_once(
    simulator: Simulator, database_url: str, tmp_path: Path, topic_prefix: str
) -> None:
    broker = MosquittoServer(port=free_port())
    config = agent_config(
        agent_id="late-broker",
        buffer=tmp_path / "buffer.sqlite",
        mqtt_url=broker.url,
        prefix=topic_prefix,
        devices=[modbus_device(simulator.modbus_port, interval="100ms")],
    )
    agent = AgentService(config)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(broker.stop)
        await agent.start()
        stack.push_async_callback(agent.stop)

        async def buffered() -> bool:
            return (await agent.buffer.stats()).readings >= 200

        await eventually(buffered, what="readings piling up in the buffer")
        assert agent.forwarder.readings_sent == 0
        broker.start()
        collector = collector_config(
            database_url=database_url,
            mqtt_url=broker.url,
            prefix=topic_prefix,
            client_id=f"{topic_prefix}-c",
        )
        await stack.enter_async_context(running_collector(collector))

        async def drained() -> bool:
            return (await agent.buffer.stats()).readings < 30

        await eventually(drained, timeout=60, what="the backlog to drain")
        await agent.stop()
        polled = sum(poller.readings for poller in agent.pollers)
        sent = agent.forwarder.readings_sent

        async def all_stored() -> bool:
            return (await asyncio.to_thread(stored_readings, database_url))[0] >= sent

        await eventually(all_stored, what="every sent reading in PostgreSQL")

    left = set(held_seqs(config.buffer.path))
    with psycopg.connect(database_url) as conn:
        stored = [row[0] for row in conn.execute("SELECT seq FROM readings")]
    rows, distinct, ordered = stored_readings(database_url)
    assert rows == distinct == len(stored) >= sent, "each sent reading stored exactly once"
    assert set(stored) | left == set(range(1, polled + 1)), (
        "every polled reading is stored or still buffered (or both, while unconfirmed)"
    )
    assert ordered, "per tag, time moves forward with the sequence number"
