"""What the dashboard reads beyond the rest of the API: the caller's own key, and each
machine's current state, against a real collector, PostgreSQL and Mosquitto."""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from collector.analytics import histories
from collector.config import CollectorConfig
from shared.mqtt import MqttClient
from tests.dashboard_plant import HOSTILE, SITE, PlantAgent, new_key, put_plant
from tests.harness import eventually, get_json, running_collector

pytestmark = pytest.mark.integration


async def test_me_tells_a_key_its_own_name_and_role(
    plant_collector_config: Callable[..., CollectorConfig],
) -> None:
    async with running_collector(plant_collector_config()) as base:
        viewer = await new_key(base, "viewer")
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {viewer}"}) as session,
            session.get(f"{base}/api/v1/me") as response,
        ):
            me = await response.json()
        assert response.status == 200
        assert (me["role"], me["name"], me["active"]) == ("viewer", "viewer key", True)
        assert viewer.startswith(f"pwk_{me['prefix']}_")
        assert "key" not in me
        async with aiohttp.ClientSession() as session, session.get(f"{base}/api/v1/me") as anon:
            assert anon.status == 401


async def test_machine_states_name_each_machines_current_span_from_the_loss_mapping(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
) -> None:
    config = plant_collector_config(sections={"analytics": {"derive_interval": "200ms"}})
    async with running_collector(config) as base:
        await put_plant(base, {"press-1": "Press one"})
        url = f"{base}/api/v1/machine-states"
        status, before = await get_json(url, site=SITE)
        assert status == 200
        assert before["time_zone"] == "Europe/Berlin"
        assert [(m["machine"], m["name"], m["state"], m["since"]) for m in before["machines"]] == [
            ("press-1", "Press one", None, None),
            ("press-2", None, None, None),
        ]
        agent = PlantAgent(publisher, topic_prefix)
        start = time.time() - 30
        await agent.readings("press-1", start, state=1, good=10)
        await agent.readings("press-2", start, state=3, reason=5, good=0)
        await agent.readings("press-1", start + 10, state=2, good=15)

        async def derived() -> bool:
            _, now = await get_json(url, site=SITE)
            return all(m["since"] is not None for m in now["machines"]) and (
                now["machines"][0]["state"] == 2
            )

        await eventually(derived, timeout=30, what="both machines' spans derived")
        _, now = await get_json(url, site=SITE)
        press_1, press_2 = now["machines"]
        assert press_1 == {
            "machine": "press-1",
            "name": "Press one",
            "area": "pressing",
            "line": "line-1",
            "state": 2,
            "state_name": "setup",
            "element": "setup",
            "reason": None,
            "reason_name": None,
            "product": None,
            "since": press_1["since"],
        }
        assert abs(_seconds(press_1["since"]) - (start + 10)) < 0.01
        assert (press_2["state_name"], press_2["reason"], press_2["reason_name"]) == (
            "down",
            5,
            HOSTILE,
        )
        assert press_2["element"] == "delay"
        # A code the mapping lacks is shown as the code alone.
        await agent.readings("press-1", start + 20, state=9)

        async def unmapped() -> bool:
            _, later = await get_json(url, site=SITE)
            return bool(later["machines"][0]["state"] == 9)

        await eventually(unmapped, timeout=30, what="the unmapped state derived")
        _, later = await get_json(url, site=SITE)
        assert (later["machines"][0]["state_name"], later["machines"][0]["element"]) == (None, None)
        status, problem = await get_json(url, site="nowhere")
        assert status == 404
        assert problem["invalid_params"][0]["name"] == "site"


def _seconds(stamp: Any) -> float:
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


async def test_a_machines_timeline_is_its_spans_cut_to_the_window(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = plant_collector_config(sections={"analytics": {"derive_interval": "200ms"}})
    async with running_collector(config) as base:
        await put_plant(base)
        agent = PlantAgent(publisher, topic_prefix)
        t0 = float(int(time.time()) - 120)
        await agent.readings("press-1", t0, state=1, good=1)
        await agent.readings("press-1", t0 + 10, state=2)
        await agent.readings("press-1", t0 + 20, state=9)
        # press-2: one stop in two spans (its reason came later), going on.
        await agent.readings("press-2", t0, state=3, good=0)
        await agent.readings("press-2", t0 + 10, reason=5)
        url = f"{base}/api/v1/machine-states/timeline"

        async def spans(machine: str, **window: str) -> list[Any]:
            status, body = await get_json(url, site=SITE, machine=machine, **window)
            assert status == 200, body
            return list(body["spans"])

        async def derived() -> bool:
            return len(await spans("press-1", window="today")) == 3 and (
                len(await spans("press-2", window="today")) == 2
            )

        await eventually(derived, timeout=30, what="both machines' spans derived")
        whole = await spans("press-1", window="today")
        assert [
            (_seconds(s["from"]) - t0, s["state"], s["state_name"], s["element"], s["ongoing"])
            for s in whole
        ] == [
            (0, 1, "running", "production", False),
            (10, 2, "setup", "setup", False),
            (20, 9, None, None, True),
        ]
        assert _seconds(whole[-1]["to"]) > t0 + 100  # the ongoing span is known up to now
        cut = await spans("press-1", **{"from": _at(t0 + 5), "to": _at(t0 + 15)})
        assert [(_seconds(s["from"]) - t0, _seconds(s["to"]) - t0) for s in cut] == [
            (5, 10),
            (10, 15),
        ]
        # The stop's earlier span lies before the window: only the part inside shows.
        stop = await spans("press-2", **{"from": _at(t0 + 12), "to": _at(t0 + 30)})
        assert [(_seconds(s["from"]) - t0, s["reason_name"], s["element"]) for s in stop] == [
            (12, HOSTILE, "delay")
        ]
        later = time.time() + 3600
        status, future = await get_json(
            url, site=SITE, machine="press-1", **{"from": _at(later), "to": _at(later + 60)}
        )
        assert (status, future["spans"], future["from"] == future["to"]) == (200, [], True)
        status, problem = await get_json(url, site=SITE, machine="press-9", window="today")
        assert (status, problem["invalid_params"][0]["name"]) == (404, "machine")
        monkeypatch.setattr(histories, "MAX_SPANS", 1)
        status, problem = await get_json(url, site=SITE, machine="press-1", window="today")
        assert (status, problem["invalid_params"][0]["name"]) == (422, "from")
