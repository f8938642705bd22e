"""The agent's side of commands, without a broker or a device: its rules, the file of finished
commands, messages that are not commands, and results kept until the broker takes them."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.commands import CommandLog, Commands, decide, default_log_path
from agent.config import CommandSettings
from protocols.base import DeviceState, DeviceUnreachable, WriteRefused
from shared.commands import CommandPayload, encode_command
from shared.readings import Value, us_to_datetime
from shared.wire import Topics
from tests.harness import eventually
from tests.unit.fakes import FakeClock, FlakyPublisher

TOPICS = Topics("p")
CLOCK_START = us_to_datetime(FakeClock().time_us())


def payload(command_id: uuid.UUID | None = None, **fields: Any) -> CommandPayload:
    values: dict[str, Any] = {
        "v": 1,
        "id": command_id or uuid.uuid4(),
        "device": "press",
        "tag": "speed",
        "value": 50,
        "requested_at": CLOCK_START,
        "expires_at": CLOCK_START + timedelta(minutes=1),
        "requested_by": "key 7e57ab1e (tests)",
    }
    return CommandPayload.model_validate({**values, **fields})


def settings(**fields: Any) -> CommandSettings:
    allow = [
        {"device": "press", "tag": "spe?d", "min": 10, "max": 90},
        {"device": "*", "tag": "on"},
    ]
    return CommandSettings.model_validate({"enabled": True, "allow": allow, **fields})


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        ({}, None),
        ({"tag": "on", "value": "anything"}, None),
        ({"expires_at": CLOCK_START}, ("expired", "expired at 2026-09-21T")),
        (
            {"requested_at": CLOCK_START - timedelta(seconds=301)},
            ("expired", "asked for 301s ago, more than commands.max_age 300s"),
        ),
        ({"tag": "level"}, ("refused", "press/level matches no entry of commands.allow")),
        ({"value": True}, ("refused", "press/speed: True is not a number (commands.allow[0]")),
        ({"value": 9.5}, ("refused", "press/speed: 9.5 is below commands.allow[0].min 10")),
        ({"value": 91}, ("refused", "press/speed: 91 is above commands.allow[0].max 90")),
    ],
)
def test_the_agents_rules_decide(fields: dict[str, Any], outcome: tuple[str, str] | None) -> None:
    refusal = decide(settings(), payload(**fields), CLOCK_START)
    if outcome is None:
        assert refusal is None
        return
    assert refusal is not None
    assert (refusal.status, refusal.reason[: len(outcome[1])]) == outcome


def test_commands_are_off_unless_enabled() -> None:
    refusal = decide(CommandSettings(), payload(), CLOCK_START)
    assert refusal is not None
    assert refusal.status == "refused"
    assert default_log_path(Path("/var/lib/buffer.sqlite")) == Path(
        "/var/lib/buffer.sqlite.commands"
    )


class Plc:
    """A device holding values; a read after a write can be made to fail."""

    name = "press"

    def __init__(self) -> None:
        self.state = DeviceState.CONNECTED
        self.values: dict[str, Value] = {"speed": 20, "on": True}
        self.fail_after_write = False
        self.writes: list[tuple[str, Value]] = []

    async def read_tag(self, tag: str) -> Value:
        if self.writes and self.fail_after_write:
            raise DeviceUnreachable("press: read timed out")
        if self.state is not DeviceState.CONNECTED:
            raise DeviceUnreachable("press: not connected")
        return self.values[tag]

    async def write(self, tag: str, value: Value) -> None:
        if not isinstance(value, type(self.values[tag])):
            raise WriteRefused(f"press/{tag}: {value!r} is not a valid bool")
        self.writes.append((tag, value))
        self.values[tag] = value


class Harness:
    def __init__(self, commands: Commands, publisher: FlakyPublisher, log_file: CommandLog) -> None:
        self.commands = commands
        self.publisher = publisher
        self.log = log_file

    async def results(self, count: int) -> list[dict[str, Any]]:
        async def enough() -> bool:
            return len(self.publisher.published) >= count

        await eventually(enough, timeout=5, what=f"{count} results published")
        assert len(self.publisher.published) == count
        assert {topic for topic, _ in self.publisher.published} == {"p/v1/press-agent/result"}
        return [json.loads(raw) for _, raw in self.publisher.published]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, plc: Plc, failures: int = 0, **fields: Any
) -> AsyncIterator[Harness]:
    log_file = CommandLog(tmp_path / "commands.sqlite")
    await log_file.open()
    publisher = FlakyPublisher(failures)
    commands = Commands(
        settings(**fields),
        {"press": plc},  # type: ignore[dict-item]  # Plc has only what commands use
        log_file,
        publisher,
        agent_id="press-agent",
        topics=TOPICS,
        clock=FakeClock(),
        publish_timeout=1.0,
        retry_interval=0.01,
    )
    tasks = [
        asyncio.ensure_future(commands.run()),
        asyncio.ensure_future(commands.publish_results()),
    ]
    try:
        yield Harness(commands, publisher, log_file)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        await log_file.close()


def send(harness: Harness, command: CommandPayload, topic_id: str | None = None) -> None:
    topic = TOPICS.command("press-agent", topic_id or str(command.id))
    assert harness.commands.handles(topic)
    harness.commands.receive(topic, encode_command(command))


def test_only_this_agents_command_topics_are_commands() -> None:
    commands = Commands(
        settings(),
        {},
        CommandLog(Path("unused")),
        FlakyPublisher(0),
        agent_id="a",
        topics=TOPICS,
        clock=FakeClock(),
        publish_timeout=1,
        retry_interval=1,
    )
    assert commands.handles("p/v1/a/cmd/1")
    assert not commands.handles("p/v1/a/cmd/")
    assert not commands.handles("p/v1/b/cmd/1")
    assert not commands.handles("p/v1/a/ack")


async def test_results_wait_for_the_broker_and_a_repeat_is_answered_not_applied(
    tmp_path: Path,
) -> None:
    plc = Plc()
    async with running(tmp_path, plc, failures=2) as harness:
        command = payload()
        send(harness, command)
        (result,) = await harness.results(1)
        assert (result["status"], result["value_before"], result["value_after"]) == (
            "applied",
            20,
            50,
        )
        assert harness.publisher.connected_checks >= 3  # it waited for the broker
        send(harness, command)
        repeat = (await harness.results(2))[1]
        assert repeat == result
        assert plc.writes == [("speed", 50)]
        assert (harness.commands.counts, harness.commands.duplicates) == ({"applied": 1}, 1)


async def test_a_write_whose_value_after_cannot_be_read_is_still_applied(tmp_path: Path) -> None:
    plc = Plc()
    plc.fail_after_write = True
    async with running(tmp_path, plc) as harness:
        send(harness, payload(value=60))
        (result,) = await harness.results(1)
    assert (result["status"], result["value_before"], result["value_after"]) == (
        "applied",
        20,
        None,
    )
    assert result["reason"] == "written; the value after could not be read: press: read timed out"


async def test_a_device_not_connected_is_waited_for_until_the_command_expires(
    tmp_path: Path,
) -> None:
    plc = Plc()
    plc.state = DeviceState.DISCONNECTED
    async with running(tmp_path, plc) as harness:
        send(harness, payload(expires_at=CLOCK_START + timedelta(seconds=2)))
        send(harness, payload())  # connect_wait (10 s) passes first: unreachable
        first, second = await harness.results(2)
    assert first["status"] == "expired"
    assert (second["status"], second["reason"]) == ("unreachable", "press: not connected")
    assert plc.writes == []


async def test_messages_that_are_not_commands_are_refused_when_they_say_whom_to_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plc = Plc()
    async with running(tmp_path, plc) as harness:
        named = str(uuid.uuid4())
        harness.commands.receive(TOPICS.command("press-agent", named), b"{not json")
        await harness.results(1)
        harness.commands.receive(TOPICS.command("press-agent", named), b"{not json")
        await harness.results(2)
        harness.commands.receive(TOPICS.command("press-agent", "x"), b"{}")
        send(harness, payload(), topic_id=str(uuid.uuid4()))
        first, again, mismatch = await harness.results(3)
    assert (first["id"], first["status"]) == (named, "refused")
    assert first["reason"].startswith("invalid command: ")
    assert again == first
    assert (mismatch["status"], mismatch["reason"]) == (
        "refused",
        "the command's id differs from its topic",
    )
    assert "ignored a message on p/v1/press-agent/cmd/x: invalid command" in caplog.text
    assert plc.writes == []


async def test_finished_commands_are_forgotten_after_the_retention(tmp_path: Path) -> None:
    log_file = CommandLog(tmp_path / "commands.sqlite")
    await log_file.close()  # never opened: nothing to close
    log_file = CommandLog(tmp_path / "commands.sqlite")
    old, new = uuid.uuid4(), uuid.uuid4()
    await log_file.record(old, b"old", 1_000_000, keep_s=10)
    await log_file.published(str(old))
    await log_file.record(new, b"new", 20_000_000, keep_s=10)
    assert await log_file.unpublished() == [(str(new), b"new")]
    assert await log_file.result(old) is None
    assert await log_file.result(new) == b"new"
    await log_file.close()


async def test_what_the_rules_or_the_driver_refuse_is_not_written(tmp_path: Path) -> None:
    plc = Plc()
    async with running(tmp_path, plc) as harness:
        send(harness, payload(value=95))
        await harness.results(1)
        send(harness, payload(device="oven", tag="on"))
        await harness.results(2)
        send(harness, payload(tag="on", value="yes"))
        results = await harness.results(3)
    assert [(r["status"], r["reason"]) for r in results] == [
        ("refused", "press/speed: 95 is above commands.allow[0].max 90"),
        ("refused", "oven/on: no such device on this agent"),
        ("refused", "press/on: 'yes' is not a valid bool"),
    ]
    assert results[2]["value_before"] is True
    assert plc.writes == []
