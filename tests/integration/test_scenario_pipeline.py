"""A scenario through the whole plant: simulator, agent (subscribed), Mosquitto, collector, DB."""

from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from protocols.simulator.scenario import load_scenario
from protocols.simulator.scenario_player import agent_devices_for, play_scenario
from shared.readings import Quality, datetime_to_us
from tests.harness import (
    NORMAL_SHIFT,
    agent_config,
    collector_config,
    eventually,
    expected_rows,
    running_agent,
    running_collector,
)
from tests.servers import MosquittoServer, free_port

pytestmark = pytest.mark.integration


def stored(url: str) -> list[tuple[Any, ...]]:
    """Every stored reading as (device, tag, ts, value, value_text, quality)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT t.device, t.name, r.ts, r.value, r.value_text, r.quality"
            " FROM readings r JOIN tags t USING (tag_id) ORDER BY t.device, t.name, r.ts, r.seq"
        ).fetchall()


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2026-03-29T{text}+02:00")


async def test_a_played_shift_is_stored_exactly_as_scripted(
    mosquitto: MosquittoServer, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    scenario = load_scenario(NORMAL_SHIFT)
    collector = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
    )
    async with (
        play_scenario(scenario, port=free_port(), subscribers=1) as player,
        running_collector(collector),
    ):
        agent = agent_config(
            agent_id="scenario-agent",
            buffer=tmp_path / "buffer.sqlite",
            mqtt_url=mosquitto.url,
            prefix=topic_prefix,
            devices=agent_devices_for(scenario, player.endpoint),
        )
        async with running_agent(agent):
            # speed 3600: 05:50 to 14:00 is 29,400 scenario seconds, 8.2 s of real time
            await player.done(timeout=30)
            expected = expected_rows(scenario)

            async def all_stored() -> bool:
                return len(stored(database_url)) >= len(expected)

            await eventually(all_stored, timeout=20, what="every scripted value in the database")

    rows = stored(database_url)
    assert {row[5] for row in rows} == {int(Quality.GOOD)}
    got = [
        (device, tag, datetime_to_us(ts), text if tag == "product" else int(value))
        for device, tag, ts, value, text, _ in rows
    ]
    # 2 machines x 5 variables start with a value, and 39 events change 80 values: 90 readings,
    # none lost, none coalesced, none repeated, each at its scripted time
    assert len(got) == 90
    assert sorted(got, key=repr) == expected
    press_good = [
        (ts, value) for device, tag, ts, value, *_ in rows if (device, tag) == ("press-1", "good")
    ]
    # the 16-bit rollover: 65495 + 240 = 65735 = 65536 + 199
    assert press_good[4:6] == [(at("07:12:00"), 65495), (at("08:00:00"), 199)]
    lathe_good = [
        (ts, value) for device, tag, ts, value, *_ in rows if (device, tag) == ("lathe-2", "good")
    ]
    # the reset at the start of the shift, from the initial 1,200,345
    assert lathe_good[:3] == [
        (at("05:50:00"), 1_200_345),
        (at("06:00:00"), 0),
        (at("06:15:00"), 20),
    ]
