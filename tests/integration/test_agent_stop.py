"""AgentService.stop() ends within its grace period in every state, and loses nothing committed.

Each test stops a real agent (real simulator, real Mosquitto) in one state, and checks the
time the stop took, that none of the agent's threads (paho's, the buffer's) is left, and
that every reading ever committed is either acknowledged by the collector or still in the
buffer file.
"""

import asyncio
import contextlib
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.buffer import SqliteBuffer
from agent.config import AgentConfig
from agent.service import AgentService
from protocols.simulator.runner import Simulator
from shared.readings import DataType, Reading
from tests.buffer_file import held_count, held_seqs, last_seq
from tests.harness import (
    agent_config,
    collector_config,
    eventually,
    modbus_device,
    running_collector,
)
from tests.servers import MosquittoServer, free_port

GRACE_S = 5.0
SLACK_S = 0.5  # scheduling on a busy 2-core machine


def config_for(
    tmp_path: Path, prefix: str, mqtt_url: str, device: dict[str, Any], **buffer: Any
) -> AgentConfig:
    config = agent_config(
        agent_id="stopper",
        buffer=tmp_path / "buffer.sqlite",
        mqtt_url=mqtt_url,
        prefix=prefix,
        devices=[device],
    )
    if buffer:
        config = config.model_copy(update={"buffer": config.buffer.model_copy(update=buffer)})
    return config


def agent_threads(agent: AgentService) -> list[str]:
    """Names of live threads that belong to this agent."""
    client_id = f"plantwire-agent-{agent.config.agent.id}"
    return [
        t.name
        for t in threading.enumerate()
        if t.is_alive() and (client_id in t.name or t.name.startswith("buffer"))
    ]


async def stop_within_grace(agent: AgentService, database_url: str | None = None) -> None:
    """Stop the agent and check time, threads, and that nothing committed was lost.

    Every reading the buffer ever committed is still in its file, or (with a collector at
    `database_url`) stored in PostgreSQL.
    """
    assert agent_threads(agent), "the agent runs threads to begin with"
    started = time.monotonic()
    await agent.stop()
    took = time.monotonic() - started
    assert took <= GRACE_S + SLACK_S, f"stop took {took:.1f}s"
    assert agent_threads(agent) == [], "threads of the agent left running"
    path = agent.config.buffer.path
    held, committed = set(held_seqs(path)), last_seq(path)
    with sqlite3.connect(path) as conn:
        dropped = conn.execute("SELECT value FROM meta WHERE key = 'dropped_oldest'").fetchone()
    assert dropped[0] == 0
    stored: set[int] = set()
    if database_url is not None:
        # In a thread: the in-process collector shares this event loop.
        stored = await asyncio.to_thread(_stored_seqs, database_url)
    missing = set(range(1, committed + 1)) - held - stored
    assert not missing, f"{len(missing)} committed readings lost"


async def buffered_at_least(agent: AgentService, count: int) -> None:
    async def enough() -> bool:
        return (await agent.buffer.stats()).readings >= count

    await eventually(enough, what=f"{count} readings in the buffer")


@contextlib.asynccontextmanager
async def silent_device() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers, like a hung PLC."""

    async def ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                pass
        writer.close()

    server = await asyncio.start_server(ignore, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("how", ["refusing", "silent"])
async def test_stop_with_the_device_down(
    how: str, mosquitto: MosquittoServer, tmp_path: Path, topic_prefix: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        port = await stack.enter_async_context(silent_device()) if how == "silent" else free_port()
        device = modbus_device(port, interval="100ms")
        device["timeout"] = "3s"  # longer than a stop may wait for it
        agent = AgentService(
            config_for(tmp_path, topic_prefix, mosquitto.url, device), stop_grace=GRACE_S
        )
        await agent.start()

        async def tried() -> bool:
            return agent.mqtt.connected and agent.pollers[0].polls == 0

        await eventually(tried, what="the agent connected to the broker, not to the device")
        if how == "silent":
            await asyncio.sleep(0.5)  # a read is now waiting for an answer that never comes
        await stop_within_grace(agent)


@pytest.mark.parametrize("how", ["absent", "hung"])
async def test_stop_with_the_broker_down(
    how: str, simulator: Simulator, tmp_path: Path, topic_prefix: str
) -> None:
    broker = MosquittoServer(port=free_port())
    device = modbus_device(simulator.modbus_port, interval="50ms")
    agent = AgentService(config_for(tmp_path, topic_prefix, broker.url, device), stop_grace=GRACE_S)
    try:
        if how == "hung":
            broker.start()
        await agent.start()
        if how == "hung":
            await eventually(lambda: _true(agent.mqtt.connected), what="connected")
            assert broker.process is not None
            broker.process.send_signal(signal.SIGSTOP)  # up, but answering nothing
        await buffered_at_least(agent, 100)
        await stop_within_grace(agent)
    finally:
        if broker.process is not None:
            broker.process.send_signal(signal.SIGCONT)
        broker.stop()


async def _true(value: bool) -> bool:
    return value


async def test_stop_while_a_late_broker_appears(
    simulator: Simulator, tmp_path: Path, topic_prefix: str
) -> None:
    broker = MosquittoServer(port=free_port())
    device = modbus_device(simulator.modbus_port, interval="50ms")
    agent = AgentService(config_for(tmp_path, topic_prefix, broker.url, device), stop_grace=GRACE_S)
    try:
        await agent.start()
        await buffered_at_least(agent, 100)
        broker.start()  # paho is reconnecting while the stop begins
        await stop_within_grace(agent)
    finally:
        broker.stop()


async def test_stop_with_the_buffer_full_under_block(
    simulator: Simulator, tmp_path: Path, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    nothing = f"mqtt://127.0.0.1:{free_port()}"
    device = modbus_device(simulator.modbus_port, interval="50ms")
    room = 10 * len(device["tags"])  # ten polls
    config = config_for(
        tmp_path, topic_prefix, nothing, device, max_readings=room, when_full="block"
    )
    agent = AgentService(config, stop_grace=GRACE_S)
    await agent.start()
    await buffered_at_least(agent, room)

    async def blocked() -> bool:
        return agent.pollers[0].handed == room + len(device["tags"])

    await eventually(blocked, what="the poller held back by the full buffer")
    with caplog.at_level(logging.WARNING, logger="agent.buffer"):
        await stop_within_grace(agent)
    assert "readings not buffered" in caplog.text, "what was given up is said"
    assert held_count(config.buffer.path) == room


async def test_stop_in_the_middle_of_draining_a_backlog(
    simulator: Simulator,
    mosquitto: MosquittoServer,
    database_url: str,
    tmp_path: Path,
    topic_prefix: str,
) -> None:
    backlog = 100_000
    device = modbus_device(simulator.modbus_port, interval="200ms")
    config = config_for(tmp_path, topic_prefix, mosquitto.url, device)
    # Small batches one at a time: the drain takes seconds, so the stop comes mid-drain
    # however fast this machine is (whole default batches drained it between two checks).
    config = config.model_copy(
        update={
            "forward": config.forward.model_copy(update={"batch_max_readings": 500, "window": 1})
        }
    )
    prefill = SqliteBuffer(config.buffer.path)
    await prefill.open()
    for start in range(0, backlog, 10_000):
        await prefill.add(
            [
                Reading("old", f"t{i % 50}", DataType.INT32, 1_790_000_000_000_000 + i, i)
                for i in range(start, start + 10_000)
            ]
        )
    await prefill.close()
    collector = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-c",
    )
    async with running_collector(collector):
        agent = AgentService(config, stop_grace=GRACE_S)
        await agent.start()

        async def draining() -> bool:
            return agent.forwarder.readings_acknowledged >= 10_000

        await eventually(draining, timeout=60, what="the backlog draining")
        assert (await agent.buffer.stats()).readings > backlog / 4, "still mid-drain"
        await stop_within_grace(agent, database_url)


def _stored_seqs(database_url: str) -> set[int]:
    with psycopg.connect(database_url) as conn:
        return {row[0] for row in conn.execute("SELECT seq FROM readings")}
