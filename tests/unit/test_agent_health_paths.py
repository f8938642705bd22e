"""The agent's health reporting: a birth the broker did not take is sent again; the config hash."""

import asyncio
import contextlib
import json
import logging
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from agent.buffer import SqliteBuffer
from agent.config import ForwardSettings
from agent.forwarder import Forwarder
from agent.health import HealthReporter, _feed_json
from shared.errors import MqttError
from shared.readings import DataType, Reading
from shared.wire import Topics
from tests.harness import eventually
from tests.unit.fakes import FakeClock, FlakyPublisher


class ShakyBroker:
    """Connected throughout; refuses the first `failures` publishes, then takes them all."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[tuple[str, bool]] = []  # (topic, taken)
        self.payloads: list[bytes] = []
        self.connected = True

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float
    ) -> None:
        taken = not self.failures
        self.attempts.append((topic, taken))
        if not taken:
            self.failures -= 1
            raise MqttError("no PUBACK within 10 s")
        self.payloads.append(payload)


def reporter_on(buffer: SqliteBuffer, clock: FakeClock) -> HealthReporter:
    topics = Topics("plant")
    forwarder = Forwarder(
        buffer,
        FlakyPublisher(failures=0),
        agent_id="a1",
        topics=topics,
        settings=ForwardSettings(),
        clock=clock,
    )
    return HealthReporter(
        agent_id="a1",
        config_hash="0" * 64,
        devices=[],
        pollers=[],
        buffer=buffer,
        forwarder=forwarder,
        topics=topics,
        clock=clock,
        interval=0.01,
    )


async def test_a_birth_the_broker_did_not_take_is_sent_again_before_any_heartbeat(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.health")
    buffer = SqliteBuffer(tmp_path / "b.sqlite")
    await buffer.open()
    clock = FakeClock()
    # A reading buffered 2.5 s ago (by the clock the reporter reads).
    await buffer.add([Reading("d", "t", DataType.INT32, clock.time_us() - 2_500_000, 1)])
    reporter = reporter_on(buffer, clock)
    topics = Topics("plant")
    broker = ShakyBroker(failures=1)
    task = asyncio.create_task(reporter.run(broker))  # type: ignore[arg-type]
    try:

        async def beating() -> bool:
            return reporter.heartbeats_sent >= 1

        await eventually(beating, timeout=5, what="a heartbeat")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await buffer.close()
    state, heartbeat = topics.state("a1"), topics.heartbeat("a1")
    assert broker.attempts[:3] == [(state, False), (state, True), (heartbeat, True)]
    assert "health message not sent: no PUBACK within 10 s" in caplog.text
    beat = json.loads(broker.payloads[1])
    assert (beat["buffer"]["readings"], beat["buffer"]["oldest_age_s"]) == (1, 2.5)


async def test_goodbye_is_said_only_while_connected_and_a_refused_one_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = SqliteBuffer(tmp_path / "b.sqlite")
    await buffer.open()
    reporter = reporter_on(buffer, FakeClock())
    assert (await reporter.snapshot(False)).oldest_age_s is None, "nothing buffered, no age"
    broker = ShakyBroker(failures=1)
    broker.connected = False
    await reporter.say_goodbye(broker)  # type: ignore[arg-type]
    assert broker.attempts == [], "no broker, no goodbye"
    broker.connected = True
    await reporter.say_goodbye(broker)  # type: ignore[arg-type]
    assert broker.attempts == [(Topics("plant").state("a1"), False)]
    assert "could not publish offline state: no PUBACK within 10 s" in caplog.text
    await reporter.say_goodbye(broker)  # type: ignore[arg-type]
    assert json.loads(broker.payloads[0])["status"] == "offline"
    await buffer.close()


class Part(BaseModel):
    n: int


class Whole(BaseModel):
    name: str
    secret: str = Field(default="x", exclude=True)
    parts: list[Part]
    note: str = "end"


def test_the_streamed_json_leaves_out_excluded_fields_as_model_dump_json_does() -> None:
    whole = Whole(name="w", parts=[Part(n=1), Part(n=2)])
    pieces: list[bytes] = []
    _feed_json(pieces.append, whole)
    assert len(pieces) > 1, "the list of models went one model at a time"
    assert b"".join(pieces) == whole.model_dump_json().encode()
    assert b"secret" not in b"".join(pieces)
