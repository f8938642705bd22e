"""The forwarder: a batch leaves the buffer only after the broker acknowledged it."""

import asyncio
import contextlib
import json
import logging
from pathlib import Path

import pytest

from agent.buffer import SqliteBuffer
from agent.config import ForwardSettings
from agent.forwarder import Forwarder
from shared.readings import DataType, Reading
from shared.wire import Topics
from tests.unit.fakes import FlakyPublisher


async def test_failed_publishes_keep_readings_buffered_then_deliver_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.forwarder")
    buffer = SqliteBuffer(tmp_path / "b.sqlite")
    await buffer.open()
    await buffer.add(
        [Reading("d", "t", DataType.INT32, 1_790_000_000_000_000 + i, i) for i in range(25)]
    )
    publisher = FlakyPublisher(failures=3)
    forwarder = Forwarder(
        buffer,
        publisher,
        agent_id="a1",
        topics=Topics("plant"),
        settings=ForwardSettings(batch_max_readings=10, retry_interval=0.001, linger=0.001),
    )
    task = asyncio.create_task(forwarder.run())
    for _ in range(500):
        if (await buffer.stats()).readings == 0:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (await buffer.stats()).readings == 0
    assert forwarder.send_failures == 3
    assert forwarder.readings_sent == 25
    topics = {topic for topic, _ in publisher.published}
    assert topics == {"plant/v1/a1/batch"}
    values = [v for _, payload in publisher.published for v in json.loads(payload)["val"]]
    assert values == list(range(25))
    assert caplog.text.count("cannot forward") == 1
    assert "forwarding resumed" in caplog.text
    await buffer.close()
