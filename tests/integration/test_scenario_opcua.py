"""Scenarios served over real OPC UA: what a subscribed agent driver receives, and the CLI."""

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client

from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import OpcUaSource
from protocols.simulator import cli as sim_cli
from protocols.simulator.opcua_server import NAMESPACE_URI
from protocols.simulator.scenario import load_scenario
from protocols.simulator.scenario_player import (
    DONE,
    ScenarioPlayer,
    agent_devices_for,
    play_scenario,
)
from shared.clock import SystemClock
from shared.readings import Reading, datetime_to_us
from tests.harness import NORMAL_SHIFT, eventually, expected_rows
from tests.servers import free_port
from tests.unit.fakes import FakeClock

pytestmark = pytest.mark.integration


def with_done_tag(device: dict[str, Any]) -> dict[str, Any]:
    """The device, also subscribed to ScenarioDone: set last, so it arrives after every change."""
    done = {"name": "done", "node": f"nsu={NAMESPACE_URI};s={DONE}", "type": "bool"}
    return {**device, "tags": [*device["tags"], done]}


async def receive_until_done(sources: list[OpcUaSource]) -> list[Reading]:
    """Collect the sources' readings until each has seen ScenarioDone turn true."""
    readings: list[Reading] = []
    done: set[str] = set()

    async def all_done() -> bool:
        for source in sources:
            for reading in await source.read():
                if reading.tag == "done":
                    if reading.value is True:
                        done.add(source.name)
                else:
                    readings.append(reading)
        return len(done) == len(sources)

    await eventually(all_done, timeout=20, what="ScenarioDone on every device")
    return readings


@pytest.fixture
async def burst() -> AsyncIterator[ScenarioPlayer]:
    """normal_shift.yaml, played at once (on a clock that never waits) when subscribed to."""
    async with play_scenario(
        NORMAL_SHIFT, port=free_port(), subscribers=1, clock=FakeClock()
    ) as player:
        yield player


async def play_to_sources(player: ScenarioPlayer, queue_size: int | None = None) -> list[Reading]:
    """Subscribe agent drivers as agent_devices_for says (or with another queue size)."""
    sources: list[OpcUaSource] = []
    for device in agent_devices_for(player.scenario, player.endpoint):
        if queue_size is not None:
            device["queue_size"] = queue_size
        source = OpcUaSource(OpcUaDevice.model_validate(with_done_tag(device)), SystemClock())
        sources.append(source)
        await source.connect()
    try:
        await player.done(timeout=20)
        return await receive_until_done(sources)
    finally:
        for source in sources:
            await source.close()


async def test_every_change_arrives_with_its_scenario_time_however_fast_it_is_played(
    burst: ScenarioPlayer,
) -> None:
    player = burst
    readings = await play_to_sources(player)
    got = sorted(((r.device, r.tag, r.ts_us, r.value) for r in readings), key=repr)
    assert got == expected_rows(player.scenario)
    # 39 events change 80 values; 2 machines x 5 variables start with a value: 90 readings
    assert len(got) == 90
    assert all(r.server_ts_us == r.ts_us for r in readings), "ServerTimestamp is the event's too"
    rollover = [r for r in readings if r.device == "press-1" and r.tag == "good"][5]
    # 64980 + 90 + 170 + 175 + 80 + 240 = 65735 = 65536 + 199, at 08:00+02:00 = 06:00Z
    assert (rollover.value, rollover.ts_us) == (199, 1_774_764_000_000_000)


async def test_a_short_queue_loses_changes_played_faster_than_published(
    burst: ScenarioPlayer,
) -> None:
    readings = await play_to_sources(burst, queue_size=2)
    goods = [r.value for r in readings if r.device == "press-1" and r.tag == "good"]
    # played in one burst, the queue keeps the last 2 of the 17 changes (the initial value may
    # have been published before the other machine's device subscribed and playing began)
    assert goods[-2:] == [1839, 1924]
    assert goods[:-2] in ([], [64980])


async def test_scenario_done_is_set_at_the_last_event_time() -> None:
    scenario = load_scenario(NORMAL_SHIFT)
    async with (
        play_scenario(scenario, port=free_port(), speed=1e9) as player,
        Client(player.endpoint) as client,
    ):
        namespace = await client.get_namespace_index(NAMESPACE_URI)
        node = client.get_node(ua.NodeId(DONE, namespace))
        await player.done(timeout=10)
        data = await node.read_data_value()
        assert data.Value is not None
        assert data.Value.Value is True
        assert data.SourceTimestamp is not None
        assert datetime_to_us(data.SourceTimestamp) == datetime_to_us(scenario.end)
        folder = await client.nodes.objects.get_child(
            [f"{namespace}:press-1", f"{namespace}:Product"]
        )
        assert await folder.read_value() == "BRK-200"


async def test_only_good_monitored_items_of_the_scenario_count_as_subscribers() -> None:
    async with (
        play_scenario(NORMAL_SHIFT, port=free_port(), speed=1e9, subscribers=1) as player,
        Client(player.endpoint) as client,
    ):
        namespace = await client.get_namespace_index(NAMESPACE_URI)
        subscription = await client.create_subscription(50, None)
        await subscription.subscribe_data_change(
            [
                client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)),
                client.get_node(ua.NodeId("press-1.Missing", namespace)),
                client.get_node(ua.NodeId("press-1.State", namespace)),
            ]
        )
        assert dict(player.server.monitored) == {"press-1.State": 1}
        assert not player.started.is_set()
        await subscription.subscribe_data_change(
            client.get_node(ua.NodeId("lathe-2.State", namespace))
        )
        await player.done(timeout=20)
        assert player.started.is_set()


@pytest.fixture
def scenario_args() -> argparse.Namespace:
    """Command-line options playing normal_shift.yaml fast on a free port."""
    return sim_cli.build_scenario_parser().parse_args(
        [str(NORMAL_SHIFT), "--opcua-port", str(free_port()), "--speed", "1e9", "--linger", "0"]
    )


async def test_the_cli_plays_prints_and_exits_0(
    scenario_args: argparse.Namespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await sim_cli.play(scenario_args, asyncio.Event()) == 0
    lines = capsys.readouterr().out.splitlines()
    port = scenario_args.opcua_port
    assert lines == [
        f"plantwire-sim playing {NORMAL_SHIFT} on OPC UA opc.tcp://127.0.0.1:{port}/plantwire/sim",
        "plantwire-sim scenario done at 2026-03-29T14:00:00+02:00",
    ]


async def test_the_cli_holds_until_stopped(
    scenario_args: argparse.Namespace, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario_args.hold = True
    stop = asyncio.Event()
    task = asyncio.create_task(sim_cli.play(scenario_args, stop))

    async def done_printed() -> bool:
        return "scenario done" in capsys.readouterr().out

    await eventually(done_printed, timeout=20, what="the scenario to be done")
    assert not task.done()
    stop.set()
    assert await asyncio.wait_for(task, timeout=10) == 0


async def test_the_cli_stopped_before_the_end_exits_1(scenario_args: argparse.Namespace) -> None:
    scenario_args.subscribers = 1  # nobody subscribes: it never starts playing
    stop = asyncio.Event()
    stop.set()
    assert await asyncio.wait_for(sim_cli.play(scenario_args, stop), timeout=10) == 1


def test_the_cli_entry_point_plays_and_refuses_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(free_port())
    argv = ["scenario", str(NORMAL_SHIFT), "--opcua-port", port, "--speed", "1e9", "--linger", "0"]
    assert sim_cli.main(argv) == 0
    assert "scenario done at" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("start: 2026-03-29T06:00:00+02:00\nmachines: {m1: {}}\nevents: []\n")
    assert sim_cli.main(["scenario", str(bad)]) == 2
    assert "events: List should have at least 1 item" in capsys.readouterr().err
