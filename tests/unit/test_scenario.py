"""Scenario scripts: the file model, its timeline, the player's pacing, the agent devices."""

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import AgentConfig
from protocols.simulator.scenario import Change, Counter, Scenario, load_scenario
from protocols.simulator.scenario_player import (
    ScenarioPlayer,
    ScenarioServer,
    agent_devices_for,
    data_type_of,
)
from shared.errors import ConfigError
from tests.unit.fakes import FakeClock

ROOT = Path(__file__).resolve().parents[2]
SIMULATOR = ROOT / "protocols" / "simulator"
NORMAL_SHIFT = SIMULATOR / "scenarios" / "normal_shift.yaml"
CEST = timezone(timedelta(hours=2))


def at(clock: str) -> datetime:
    """A time of 2026-03-29 in summer time (UTC+2), e.g. at("08:00")."""
    hour, minute, *second = (int(part) for part in clock.split(":"))
    return datetime(2026, 3, 29, hour, minute, *second, tzinfo=CEST)


def small(**changes: Any) -> dict[str, Any]:
    """A small valid scenario document, with top-level keys replaced."""
    document: dict[str, Any] = {
        "start": "2026-03-29T06:00:00+02:00",
        "speed": 60,
        "machines": {"m1": {"good": {"type": "uint16", "initial": 65530}}},
        "events": [
            {"at": "+00:01", "machine": "m1", "state": 1, "good": 10},
            {"at": "+00:03:30", "machine": "m1", "state": 3, "reason": 2},
            {"at": "2026-03-29T04:05:00Z", "machine": "m1", "reset": ["good"], "good": 2},
        ],
    }
    document.update(changes)
    return document


def problems(document: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    return str(caught.value)


def test_the_normal_shift_plays_a_rollover_a_reset_and_a_product_change() -> None:
    scenario = load_scenario(NORMAL_SHIFT)
    timeline = scenario.timeline()
    assert len(scenario.events) == len(timeline) == 39
    assert scenario.end == at("14:00")
    press = [change for change in timeline if change.machine == "press-1"]
    goods = [(change.at, change.values["good"]) for change in press if "good" in change.values]
    # 64980 + 90 + 170 + 175 + 80 = 65495; + 240 = 65735, which a UInt16 keeps as 65735 - 65536
    assert goods[:5] == [
        (at("06:15"), 65070),
        (at("06:30"), 65240),
        (at("07:00"), 65415),
        (at("07:12"), 65495),
        (at("08:00"), 199),
    ]
    lathe_start = next(change for change in timeline if change.machine == "lathe-2")
    assert lathe_start == Change(
        at("06:00"), "lathe-2", {"state": 1, "reason": 0, "good": 0, "scrap": 0}
    )
    product_change = next(change for change in press if "product" in change.values)
    # scrap was 412 + 3 + 2 + 4 + 1 = 422; reset to 0 with nothing added
    assert product_change == Change(
        at("11:05"), "press-1", {"state": 1, "reason": 0, "scrap": 0, "product": "BRK-200"}
    )


def test_times_are_offsets_or_absolute_and_unchanged_values_are_left_out() -> None:
    scenario = Scenario.model_validate(small())
    assert [change.at for change in scenario.timeline()] == [
        at("06:01"),
        at("06:03:30"),
        at("06:05"),
    ]
    # 65530 + 10 = 65540, kept by a UInt16 as 4; the reset then starts again from 0: 0 + 2
    assert [change.values for change in scenario.timeline()] == [
        {"state": 1, "good": 4},
        {"state": 3, "reason": 2},
        {"good": 2},
    ]
    assert scenario.initial_values() == {
        "m1": {"state": 0, "reason": 0, "good": 65530, "scrap": 0, "product": ""}
    }


def test_an_event_that_changes_nothing_still_marks_its_time() -> None:
    document = small(events=[{"at": "+01:00", "machine": "m1", "state": 0, "good": 0}])
    scenario = Scenario.model_validate(document)
    assert scenario.timeline() == [Change(at("07:00"), "m1", {})]


def test_times_may_be_given_as_datetimes() -> None:
    document = small(start=at("06:00"))
    document["events"] = [{"at": at("06:00:01").astimezone(UTC), "machine": "m1", "state": 1}]
    assert Scenario.model_validate(document).end == at("06:00:01")


def test_counters_wrap_at_their_type_size() -> None:
    assert Counter(type="uint16").modulus == 65536
    assert Counter().modulus == 4_294_967_296


def test_events_name_known_machines_in_time_order(tmp_path: Path) -> None:
    events = [
        {"at": "+00:10", "machine": "m1", "state": 1},
        {"at": "+00:05", "machine": "m1", "state": 2},
        {"at": "+00:10", "machine": "m1", "state": 3},
        {"at": "+00:20", "machine": "press-9", "state": 1},
        {"at": "+00:00", "machine": "m1", "state": 1},
    ]
    message = problems(small(events=events), tmp_path)
    assert "events.1.at: before the previous event (2026-03-29T06:10:00+02:00)" in message
    assert "events.2.at: m1 already has an event then" in message
    assert "events.3.machine: no machine named press-9 (got 'press-9')" in message
    assert "events.4.at: must be after start (the initial values carry it)" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"start": "2026-03-29T06:00:00"}, "start: give the time's UTC offset"),
        ({"start": 7}, "start: expected an ISO 8601 time with its UTC offset (got 7)"),
        ({"start": "tomorrow"}, "start: Invalid isoformat string"),
        ({"speed": 0}, "speed: Input should be greater than 0"),
        ({"machines": {"press 1": {}}}, "machine name 'press 1': use letters, digits, _ and -"),
        (
            {"machines": {"m1": {"good": {"type": "uint16", "initial": 65536}}}},
            "machines.m1.good: initial 65536 does not fit uint16",
        ),
        ({"machines": {"m1": {"colour": 1}}}, "machines.m1.colour: unknown key"),
        ({"events": [{"at": "+1:5", "machine": "m1"}]}, "expected an offset +HH:MM or +HH:MM:SS"),
        ({"events": [{"at": 90, "machine": "m1", "state": 1}]}, "quote offsets, e.g. '+01:30'"),
        ({"events": [{"at": [1], "machine": "m1"}]}, "expected an ISO 8601 time with its"),
        ({"events": [{"at": "+00:01", "machine": "m1"}]}, "events.0: an event sets at least one"),
        (
            {"events": [{"at": "+00:01", "machine": "m1", "reset": ["good", "good"]}]},
            "events.0.reset: a counter is listed twice",
        ),
        ({"events": []}, "events: List should have at least 1 item"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    assert expected in problems(small(**changes), tmp_path)


class RecordingServer(ScenarioServer):
    """A scenario server that records what it is asked to write instead of serving it."""

    def __init__(self, scenario: Scenario, clock: FakeClock) -> None:
        super().__init__(scenario, "127.0.0.1", 4840)
        self.clock = clock
        self.written: list[tuple[float, Change]] = []
        self.finished: datetime | None = None

    async def write(self, change: Change) -> None:
        self.written.append((self.clock.now, change))

    async def finish(self, at: datetime) -> None:
        self.finished = at


async def test_the_player_keeps_the_scenario_pace_on_its_clock() -> None:
    clock = FakeClock()
    server = RecordingServer(Scenario.model_validate(small()), clock)
    player = ScenarioPlayer(server, clock=clock)
    player.begin()
    await player.done(timeout=5)
    # speed 60: events 60 s, 210 s and 300 s after start play after 1, 3.5 and 5 real seconds
    assert [moment for moment, _ in server.written] == [1.0, 3.5, 5.0]
    assert clock.sleeps == [1.0, 2.5, 1.5]
    assert [change.at for _, change in server.written] == [at("06:01"), at("06:03:30"), at("06:05")]
    assert server.finished == at("06:05")


async def test_the_speed_can_be_overridden_and_late_events_play_at_once() -> None:
    clock = FakeClock()
    server = RecordingServer(Scenario.model_validate(small()), clock)
    player = ScenarioPlayer(server, clock=clock, speed=120)

    async def slow_write(change: Change) -> None:
        clock.now += 2.0  # a write that takes longer than the gap to the next event
        server.written.append((clock.now, change))

    server.write = slow_write  # type: ignore[method-assign]
    player.begin()
    await player.done(timeout=5)
    # speed 120: due at 0.5 s, 1.75 s and 2.5 s; each write takes 2 s, so the second and
    # third are late (due 1.75 < 2.5 and 2.5 < 4.5) and are written without sleeping
    assert clock.sleeps == [0.5]
    assert [moment for moment, _ in server.written] == [2.5, 4.5, 6.5]


async def test_the_player_waits_for_every_machine_to_be_subscribed() -> None:
    clock = FakeClock()
    document = small(machines={"m1": {}, "m2": {}})
    server = RecordingServer(Scenario.model_validate(document), clock)
    player = ScenarioPlayer(server, clock=clock, subscribers=2)
    player.begin()
    for monitored in ({"m1.State": 2}, {"m1.State": 2, "m2.State": 1}):
        server.monitored.update(monitored)
        server.monitoring_changed.set()
        with pytest.raises(TimeoutError):
            await player.done(timeout=0.05)
        assert not player.started.is_set()
    server.monitored.update({"m2.State": 1})
    server.monitoring_changed.set()
    await player.done(timeout=5)
    assert player.started.is_set()
    assert len(server.written) == 3


async def test_done_reports_a_player_that_failed_or_never_started() -> None:
    clock = FakeClock()
    server = RecordingServer(Scenario.model_validate(small()), clock)
    player = ScenarioPlayer(server, clock=clock)
    with pytest.raises(RuntimeError, match="not started"):
        await player.done(timeout=1)
    await player.stop()  # nothing to stop

    async def broken(change: Change) -> None:
        raise OSError("disk on fire")

    server.write = broken  # type: ignore[method-assign]
    player.begin()
    with pytest.raises(OSError, match="disk on fire"):
        await player.done(timeout=5)


async def test_stopping_cancels_the_player() -> None:
    clock = FakeClock()
    server = RecordingServer(Scenario.model_validate(small()), clock)
    player = ScenarioPlayer(server, clock=clock, subscribers=1)
    player.begin()
    await asyncio.sleep(0)
    await player.stop()
    with pytest.raises(asyncio.CancelledError):
        await player.done(timeout=1)


def test_agent_devices_subscribe_without_losing_changes() -> None:
    scenario = load_scenario(NORMAL_SHIFT)
    devices = agent_devices_for(scenario, "opc.tcp://127.0.0.1:4840/plantwire/sim")
    assert [device["name"] for device in devices] == ["press-1", "lathe-2"]
    press = devices[0]
    assert press["mode"] == "subscribe"
    assert press["sampling_interval"] == "0s"
    assert press["queue_size"] == 40  # 39 events, each changing a variable at most once, + 1
    assert press["tags"][2] == {
        "name": "good",
        "node": "nsu=urn:plantwire:simulator;s=press-1.GoodCount",
        "type": "uint16",
    }
    assert [tag["type"] for tag in devices[1]["tags"]] == [
        "uint16",
        "uint16",
        "uint32",
        "uint32",
        "string",
    ]


def test_machines_without_products_have_no_product_tag() -> None:
    document = small(machines={"m1": {}, "m2": {}})
    document["events"].append({"at": "+00:06", "machine": "m2", "product": "X"})
    devices = agent_devices_for(Scenario.model_validate(document), "opc.tcp://h:1")
    assert [tag["name"] for tag in devices[0]["tags"]] == ["state", "reason", "good", "scrap"]
    assert devices[1]["tags"][-1]["name"] == "product"
    assert data_type_of(Scenario.model_validate(document), "m2", "product") == "string"


def test_the_sample_agent_configuration_is_what_the_helper_builds() -> None:
    sample = yaml.safe_load((SIMULATOR / "scenario_agent.yaml").read_text())
    config = AgentConfig.model_validate(sample)
    scenario = load_scenario(NORMAL_SHIFT)
    expected = agent_devices_for(scenario, "opc.tcp://127.0.0.1:4840/plantwire/sim")
    assert sample["devices"] == expected
    assert [device.name for device in config.devices] == ["press-1", "lathe-2"]
    readme = (SIMULATOR / "README.md").read_text()
    assert (SIMULATOR / "scenario_agent.yaml").read_text() in readme
