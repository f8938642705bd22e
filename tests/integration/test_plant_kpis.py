"""A scripted plant through the whole pipeline, every KPI checked against values worked by hand.

One scenario holds every case, each on machines of its own: the simulator plays it over OPC UA
with the scenario's times, real agents subscribe and forward over Mosquitto, the collector
stores and derives, and the KPIs come from its HTTP API. The site is in Europe/Berlin: an
early shift 06:00-14:00 with a break 10:00-10:30, a night shift 22:00-06:00, every day but
2026-03-04 (a day off); production days start at 06:00. In March before the 29th Berlin is
UTC+1, so the early shift is 05:00-13:00 UTC with the break 09:00-09:30 UTC: its planned busy
time is 8 h - 30 min = 27000 s. Products: A 2.0 s per unit, B 1.5 s.
"""

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import yaml

from agent.config import AgentConfig
from protocols.simulator.scenario import Scenario
from protocols.simulator.scenario_player import agent_devices_for, node_id_text, play_scenario
from tests.faults.proxy import SilentCutProxy
from tests.harness import (
    PLANT_STATES,
    TEST_KEY,
    collector_config,
    eventually,
    expected_rows,
    running_agent,
    running_collector,
)
from tests.servers import MosquittoServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
AGENT, LATE_AGENT = "plant-agent", "late-agent"
PBT = 27000.0  # an early shift's planned busy time, s
LINE_2 = ("l-a", "l-b", "l-c")
MACHINES = (
    "m-normal",
    "m-offday",
    "m-counters",
    "m-down",
    "m-night",
    "m-spring",
    "m-autumn",
    "m-product",
    "m-late-x",
    "m-late-y",
    *LINE_2,
)


def z(text: str) -> datetime:
    """A UTC time, 2026-03-02T05:00 style."""
    return datetime.fromisoformat(f"{text}:00+00:00")


# --- the scenario: (UTC time, machine, changes) ------------------------------------------

Event = tuple[str, str, dict[str, Any]]
EVENTS: list[Event] = [
    # 1. A normal shift, Monday 2 March.
    ("2026-03-02T05:00", "m-normal", {"state": 1}),
    ("2026-03-02T07:00", "m-normal", {"good": 3000, "scrap": 100, "state": 3, "reason": 5}),
    ("2026-03-02T07:30", "m-normal", {"state": 4, "reason": 0}),  # setup
    ("2026-03-02T08:00", "m-normal", {"state": 1}),
    ("2026-03-02T11:00", "m-normal", {"state": 3, "reason": 3}),  # a jam, 60 s
    ("2026-03-02T11:01", "m-normal", {"state": 1, "reason": 0}),
    ("2026-03-02T12:59", "m-normal", {"good": 3600, "scrap": 150}),
    ("2026-03-02T13:00", "m-normal", {"state": 2}),
    # 2. No planned time: the day off, Wednesday 4 March, worked anyway.
    ("2026-03-04T05:00", "m-offday", {"state": 1}),
    ("2026-03-04T12:00", "m-offday", {"good": 500}),
    ("2026-03-04T13:00", "m-offday", {"state": 2}),
    # 3. A 16-bit rollover and a reset, Tuesday 3 March (good starts at 65000).
    ("2026-03-03T05:00", "m-counters", {"state": 1}),
    ("2026-03-03T06:00", "m-counters", {"good": 400}),  # 65400
    ("2026-03-03T07:00", "m-counters", {"good": 300}),  # 65700 - 65536 = 164
    ("2026-03-03T08:00", "m-counters", {"reset": ["good"], "good": 50}),  # 50
    ("2026-03-03T12:00", "m-counters", {"good": 1000}),  # 1050
    ("2026-03-03T13:00", "m-counters", {"state": 2}),
    # 4. Down the whole shift, Tuesday 3 March.
    ("2026-03-03T05:00", "m-down", {"state": 3, "reason": 5}),
    ("2026-03-03T13:00", "m-down", {"state": 2, "reason": 0}),
    # 5. The night shift of Tuesday 3 March, 22:00-06:00 (21:00-05:00 UTC), across midnight.
    ("2026-03-03T21:00", "m-night", {"state": 1}),
    ("2026-03-04T01:00", "m-night", {"state": 3, "reason": 5}),
    ("2026-03-04T02:00", "m-night", {"state": 1, "reason": 0}),
    ("2026-03-04T04:30", "m-night", {"good": 5000, "scrap": 200}),
    ("2026-03-04T05:00", "m-night", {"state": 2}),
    # 6a. Spring: the night of 28 March, 22:00 CET (21:00 UTC) to 06:00 CEST (04:00 UTC): 7 h.
    ("2026-03-28T21:00", "m-spring", {"state": 1}),
    ("2026-03-29T03:59", "m-spring", {"good": 1000}),
    ("2026-03-29T04:00", "m-spring", {"state": 2}),
    # 6b. Autumn: the night of 24 October, 22:00 CEST (20:00 UTC) to 06:00 CET (05:00): 9 h.
    ("2026-10-24T20:00", "m-autumn", {"state": 1}),
    ("2026-10-24T23:00", "m-autumn", {"state": 3, "reason": 5}),
    ("2026-10-24T23:30", "m-autumn", {"state": 1, "reason": 0}),
    ("2026-10-25T04:59", "m-autumn", {"good": 3000}),
    ("2026-10-25T05:00", "m-autumn", {"state": 2}),
    # 7. A product change mid-shift, Thursday 5 March: 1500 A, then 2000 B.
    ("2026-03-05T05:00", "m-product", {"state": 1}),
    ("2026-03-05T09:30", "m-product", {"good": 1500, "product": "B"}),
    ("2026-03-05T12:59", "m-product", {"good": 2000}),
    ("2026-03-05T13:00", "m-product", {"state": 2}),
    # 9. A line of three machines, Friday 6 March.
    ("2026-03-06T05:00", "l-a", {"state": 1}),
    ("2026-03-06T05:00", "l-b", {"state": 3, "reason": 5}),
    ("2026-03-06T05:00", "l-c", {"state": 1}),
    ("2026-03-06T09:30", "l-b", {"state": 1, "reason": 0}),
    ("2026-03-06T12:00", "l-a", {"good": 10000}),
    ("2026-03-06T12:00", "l-b", {"good": 3000, "scrap": 1000}),
    ("2026-03-06T13:00", "l-a", {"state": 2}),
    ("2026-03-06T13:00", "l-b", {"state": 2}),
    ("2026-03-06T13:00", "l-c", {"state": 2}),
]
# 8. A late backlog, Friday 6 March: m-late-x and m-late-y run the same shift. m-late-y's
# state reaches the collector on time; its reason, counters and product come hours late.
for at, changes in [
    ("2026-03-06T05:00", {"state": 1}),
    ("2026-03-06T06:00", {"state": 3, "reason": 5}),
    ("2026-03-06T06:30", {"state": 1, "reason": 0}),
    ("2026-03-06T08:00", {"good": 2000, "scrap": 100}),
    ("2026-03-06T12:00", {"good": 1000}),
    ("2026-03-06T13:00", {"state": 2}),
]:
    EVENTS += [(at, "m-late-x", changes), (at, "m-late-y", changes)]


def scenario() -> Scenario:
    machines: dict[str, Any] = {
        name: {"state": 2, "reason": 0, "product": "A", "good": {"type": "uint32"}}
        for name in MACHINES
    }
    machines["m-counters"]["good"] = {"type": "uint16", "initial": 65000}
    events = [
        {"at": z(at).isoformat(), "machine": machine, **changes}
        for at, machine, changes in sorted(EVENTS, key=lambda event: event[0])
    ]
    return Scenario.model_validate(
        {"start": "2026-03-01T00:00:00+00:00", "speed": 1e8, "machines": machines, "events": events}
    )


def plant() -> dict[str, Any]:
    def machine(name: str) -> dict[str, Any]:
        def tag(part: str) -> dict[str, Any]:
            late = name == "m-late-y" and part != "state"
            return {"tag": f"{name}/{part}", "agent": LATE_AGENT if late else AGENT}

        good = tag("good") | ({"rollover": 65536} if name == "m-counters" else {})
        return {
            "id": name,
            "area": "assembly",
            "line": "line-2" if name in LINE_2 else "line-1",
            "state": tag("state"),
            "reason": tag("reason"),
            "good": good,
            "scrap": tag("scrap"),
            "product": tag("product"),
            "products": [
                {"product": "A", "ideal_cycle_time_s": 2.0},
                {"product": "B", "ideal_cycle_time_s": 1.5},
            ],
        }

    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    return {
        "sites": [
            {
                "id": "plant-1",
                "time_zone": "Europe/Berlin",
                "production_day_start": "06:00",
                "areas": [{"id": "assembly", "lines": [{"id": "line-1"}, {"id": "line-2"}]}],
                "calendar": {
                    "shifts": [
                        {
                            "name": "early",
                            "start": "06:00",
                            "end": "14:00",
                            "days": every_day,
                            "breaks": [{"start": "10:00", "end": "10:30"}],
                        },
                        {"name": "night", "start": "22:00", "end": "06:00", "days": every_day},
                    ],
                    "days_off": ["2026-03-04"],
                },
                "loss_mapping": {
                    "states": PLANT_STATES,
                    "reasons": [
                        {"value": 3, "name": "Jam", "element": "delay", "tpm": "minor_stop"},
                        {"value": 5, "name": "No operator", "element": "delay"},
                    ],
                },
                "machines": [machine(name) for name in MACHINES],
            }
        ]
    }


# --- the pipeline ------------------------------------------------------------------------


def agent(
    agent_id: str, devices: list[dict[str, Any]], mqtt_url: str, prefix: str, folder: Path
) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent": {"id": agent_id, "http_port": 0, "heartbeat_interval": "1s"},
            "buffer": {"path": str(folder / f"{agent_id}.sqlite")},
            "mqtt": {
                "url": mqtt_url,
                "topic_prefix": prefix,
                "connect_timeout": "2s",
                "reconnect_min": "1s",
                "reconnect_max": "1s",
            },
            "forward": {"publish_timeout": "3s", "retry_interval": "200ms", "linger": "20ms"},
            "devices": devices,
        }
    )


async def count(url: str, query: str) -> int:
    # Asynchronous: a blocking query would stall the collector running in this event loop,
    # whose open transaction (creating a day's partition) it may have to wait for.
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute(query)).fetchone()
    return int(row[0]) if row else 0


class Plant:
    """The running pipeline: the collector's URL, and the late agent's way to the broker."""

    def __init__(self, base: str, proxy: SilentCutProxy, late_port: int, url: str) -> None:
        self.base = base
        self.proxy = proxy
        self.late_port = late_port
        self.url = url

    async def settled(self, readings: int) -> None:
        """Wait until `readings` are stored and the deriver has taken up every write."""

        async def done() -> bool:
            stored = await count(self.url, "SELECT count(*) FROM readings")
            logged = await count(
                self.url,
                "SELECT (SELECT count(*) FROM derive_log) + (SELECT count(*) FROM derive_machines)",
            )
            return stored >= readings and logged == 0

        await eventually(done, timeout=60, what=f"{readings} readings stored and derived")

    async def kpis(self, **params: str) -> Any:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TEST_KEY}"}) as session,
            session.get(f"{self.base}/api/v1/kpis", params={"site": "plant-1", **params}) as got,
        ):
            body = await got.json()
            assert got.status == 200, body
            return body


@pytest.fixture
async def running_plant(
    mosquitto: MosquittoServer, database_url: str, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Plant, int, int]]:
    script = scenario()
    equipment = tmp_path / "equipment.yaml"
    equipment.write_text(yaml.safe_dump(plant()))
    config = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        sections={
            "rate_limits": {"enabled": False},
            "equipment": {"file": str(equipment)},
            "analytics": {"derive_interval": "100ms"},
        },
    )
    late_port = free_port()
    proxy = SilentCutProxy(mosquitto.port)
    async with contextlib.AsyncExitStack() as stack:
        player = await stack.enter_async_context(
            play_scenario(script, port=free_port(), subscribers=1)
        )
        base = await stack.enter_async_context(running_collector(config))
        devices = agent_devices_for(script, player.endpoint)
        late = next(device for device in devices if device["name"] == "m-late-y")
        on_time = dict(late, tags=[t for t in late["tags"] if t["name"] == "state"])
        late["tags"] = [t for t in late["tags"] if t["name"] != "state"]
        # The late agent subscribes first, then the on-time agent's subscription starts play.
        await stack.enter_async_context(
            running_agent(
                agent(LATE_AGENT, [late], f"mqtt://127.0.0.1:{late_port}", topic_prefix, tmp_path)
            )
        )

        async def late_subscribed() -> bool:
            return player.server.monitored[node_id_text("m-late-y", "good")] >= 1

        await eventually(late_subscribed, timeout=30, what="the late agent's subscription")
        others = [on_time if device is late else device for device in devices]
        await stack.enter_async_context(
            running_agent(agent(AGENT, others, mosquitto.url, topic_prefix, tmp_path))
        )
        await player.done(timeout=60)
        rows = expected_rows(script)
        late_rows = sum(1 for machine, tag, *_ in rows if machine == "m-late-y" and tag != "state")
        stack.push_async_callback(proxy.close)
        yield Plant(base, proxy, late_port, database_url), len(rows) - late_rows, len(rows)


# --- the cases ---------------------------------------------------------------------------


def working(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body["total"]["working"]["elements"])


async def test_every_case_by_hand(running_plant: tuple[Plant, int, int]) -> None:
    plant_, on_time, everything = running_plant
    await plant_.settled(on_time)

    async def machine(name: str, start: str, end: str, **more: str) -> Any:
        window = {"from": z(start).isoformat(), "to": z(end).isoformat()}
        return await plant_.kpis(machine=name, **window, **more)

    # 1. A normal shift. Running 05:00-07:00 (7200 s) + 08:00-11:00 less the break
    # (10800 - 1800 = 9000) + 11:01-13:00 (7140): APT 23340. Delay: the failure 07:00-07:30
    # (1800) and the jam (60, a minor stoppage): ADET 1860; setup 07:30-08:00: ASUT 1800.
    # Counted: 3000 + 3600 good, 100 + 150 scrap, all A: PQ 6850, ideal 6850 x 2.0 = 13700.
    body = await machine("m-normal", "2026-03-02T05:00", "2026-03-02T13:00")
    e, k = working(body), body["total"]["kpis"]
    assert (e["pbt_s"], e["apt_s"], e["adet_s"], e["minor_stop_s"]) == (PBT, 23340, 1860, 60)
    assert (e["asut_s"], e["unknown_s"], e["unplanned_production_s"]) == (1800, 0, 1800)
    assert (e["gq"], e["sq"], e["pq"], e["ideal_s"], e["fe"]) == (6600, 250, 6850, 13700, 1)
    assert k["availability"] == pytest.approx(23340 / 27000)  # 0.8644
    assert k["effectiveness"] == pytest.approx(13700 / 23340)  # 0.5870
    assert k["quality_ratio"] == pytest.approx(6600 / 6850)  # 0.9635
    assert k["oee"] == pytest.approx(13700 / 27000 * 6600 / 6850)  # 0.4889
    assert (k["mtbf_s"], k["mttr_s"]) == (23340, 1800)

    # 2. No planned time: the day off's production day (05:00 UTC to 05:00 UTC) has none.
    # The 8 h worked and the 500 counted are reported as outside the plan; no KPI is assumed.
    body = await machine("m-offday", "2026-03-04T05:00", "2026-03-05T05:00")
    e, k = working(body), body["total"]["kpis"]
    assert (e["pbt_s"], e["unplanned_production_s"], e["unplanned_pq"]) == (0, 28800, 500)
    assert all(value is None for name, value in k.items() if name != "throughput_per_h")
    assert "no_planned_time" in {w["code"] for w in body["total"]["working"]["warnings"]}

    # 3. Counters: +400 (65400), +300 across 2^16 (65700 - 65536 = 164, counted 300), a reset
    # to 50 (counted 50), +1000: GQ 1750. Running all shift: APT 27000, ideal 3500.
    body = await machine("m-counters", "2026-03-03T05:00", "2026-03-03T13:00")
    e, k = working(body), body["total"]["kpis"]
    assert (e["gq"], e["pq"], e["apt_s"]) == (1750, 1750, PBT)
    assert (k["availability"], k["quality_ratio"]) == (1.0, 1.0)
    assert k["oee"] == pytest.approx(3500 / 27000)  # 0.1296

    # 4. Down the whole shift: availability 0; nothing made, so effectiveness and quality are
    # unknown (null), not 100 %. One failure of 27000 s of planned time.
    body = await machine("m-down", "2026-03-03T05:00", "2026-03-03T13:00")
    e, k = working(body), body["total"]["kpis"]
    assert (e["adet_s"], e["apt_s"], e["fe"]) == (PBT, 0, 1)
    assert k["availability"] == 0.0
    assert (k["effectiveness"], k["quality_ratio"], k["oee"]) == (None, None, None)
    assert (k["mtbf_s"], k["mttr_s"]) == (0.0, PBT)
    assert "no_counts" in {w["code"] for w in body["total"]["working"]["warnings"]}

    # 5. The night shift across midnight: 21:00-05:00 UTC, 8 h, no break: PBT 28800.
    # Running 21:00-01:00 (14400) + 02:00-05:00 (10800) = APT 25200; down 3600.
    # 5000 good + 200 scrap of A: ideal 5200 x 2.0 = 10400. It belongs to the 3rd (its start).
    body = await machine("m-night", "2026-03-03T21:00", "2026-03-04T05:00", group_by="shift")
    e, k = working(body), body["total"]["kpis"]
    assert (e["pbt_s"], e["apt_s"], e["adet_s"], e["pq"]) == (28800, 25200, 3600, 5200)
    assert k["oee"] == pytest.approx(10400 / 28800 * 5000 / 5200)  # 0.3472
    assert [group["key"] for group in body["groups"]] == ["2026-03-03/night"]
    body = await machine("m-night", "2026-03-03T05:00", "2026-03-04T05:00", group_by="day")
    assert [group["key"] for group in body["groups"]] == ["2026-03-03"]

    # 6a. Spring forward: the night 21:00-04:00 UTC is 7 h (02:00-03:00 does not exist).
    # Running throughout: APT = PBT = 25200; 1000 A: ideal 2000.
    body = await machine("m-spring", "2026-03-28T21:00", "2026-03-29T04:00", group_by="hour")
    e, k = working(body), body["total"]["kpis"]
    assert (e["pbt_s"], e["apt_s"], e["gq"]) == (25200, 25200, 1000)
    assert k["oee"] == pytest.approx(2000 / 25200)
    assert [group["key"] for group in body["groups"]] == [
        "2026-03-28T22:00+01:00",
        "2026-03-28T23:00+01:00",
        "2026-03-29T00:00+01:00",
        "2026-03-29T01:00+01:00",
        "2026-03-29T03:00+02:00",
        "2026-03-29T04:00+02:00",
        "2026-03-29T05:00+02:00",
    ]
    assert all(g["working"]["elements"]["pbt_s"] == 3600 for g in body["groups"])
    body = await machine("m-spring", "2026-03-28T05:00", "2026-03-30T04:00", group_by="day")
    days = [(g["key"], g["from"], g["to"]) for g in body["groups"]]
    # The production day of the 28th runs 06:00 CET to 06:00 CEST: 23 hours.
    assert days == [
        ("2026-03-28", "2026-03-28T05:00:00Z", "2026-03-29T04:00:00Z"),
        ("2026-03-29", "2026-03-29T04:00:00Z", "2026-03-30T04:00:00Z"),
    ]

    # 6b. Fall back: the night 20:00-05:00 UTC is 9 h (02:00-03:00 happens twice).
    # Down 23:00-23:30: APT 32400 - 1800 = 30600; 3000 A: ideal 6000.
    body = await machine("m-autumn", "2026-10-24T20:00", "2026-10-25T05:00", group_by="hour")
    e, k = working(body), body["total"]["kpis"]
    assert (e["pbt_s"], e["apt_s"], e["adet_s"], e["fe"]) == (32400, 30600, 1800, 1)
    assert k["availability"] == pytest.approx(30600 / 32400)
    keys = [group["key"] for group in body["groups"]]
    assert len(keys) == 9
    assert keys[4:6] == ["2026-10-25T02:00+02:00", "2026-10-25T02:00+01:00"]
    body = await machine("m-autumn", "2026-10-24T04:00", "2026-10-25T05:00", group_by="day")
    assert [(g["key"], g["from"], g["to"]) for g in body["groups"]] == [
        ("2026-10-24", "2026-10-24T04:00:00Z", "2026-10-25T05:00:00Z")  # 25 hours
    ]

    # 7. A product change: 1500 counted as A (made before the change), 2000 as B:
    # ideal 1500 x 2.0 + 2000 x 1.5 = 6000 over APT 27000.
    body = await machine("m-product", "2026-03-05T05:00", "2026-03-05T13:00")
    e, k = working(body), body["total"]["kpis"]
    assert (e["ideal_s"], e["pq"], e["apt_s"]) == (6000, 3500, PBT)
    assert k["effectiveness"] == pytest.approx(6000 / 27000)

    # 9. A line of three: l-a runs and makes 10000 (ideal 20000); l-b is down 05:00-09:30
    # (14400 s of planned time before the break) then makes 3000 + 1000 scrap (ideal 8000);
    # l-c runs and counts nothing. Summed: PBT 81000, APT 27000 + 12600 + 27000 = 66600,
    # GQ 13000, PQ 14000, ideal 28000.
    body = await plant_.kpis(
        line="line-2",
        **{"from": z("2026-03-06T05:00").isoformat()},
        to=z("2026-03-06T13:00").isoformat(),
        by_machine="true",
    )
    e, k = working(body), body["total"]["kpis"]
    assert (e["pbt_s"], e["apt_s"], e["gq"], e["pq"], e["ideal_s"]) == (
        81000,
        66600,
        13000,
        14000,
        28000,
    )
    assert k["oee"] == pytest.approx(28000 / 81000 * 13000 / 14000)  # 0.3210
    machines = {part["machine"]: part["kpis"]["oee"] for part in body["total"]["machines"]}
    assert machines["l-c"] is None  # nothing counted: unknown, so no average could be right
    average = (machines["l-a"] + machines["l-b"]) / 2  # 0.4815: what averaging would claim
    assert abs(average - k["oee"]) > 0.1

    # 8. The late backlog: before it, m-late-y has states but no reasons or counts.
    shift = ("2026-03-06T05:00", "2026-03-06T13:00")
    on_time_body = await machine("m-late-x", *shift)
    before = await machine("m-late-y", *shift)
    assert working(before)["pq"] == 0
    assert working(before)["apt_s"] == working(on_time_body)["apt_s"] == 25200
    await plant_.proxy.start(plant_.late_port)
    await plant_.settled(everything)
    after = await machine("m-late-y", *shift)
    assert working(after) == working(on_time_body)
    assert after["total"]["kpis"] == on_time_body["total"]["kpis"]
    # 25200 running, 1800 down; 3000 good + 100 scrap of A.
    assert working(after)["ideal_s"] == 6200
    assert [event["reason"] for event in after["total"]["failure_events"]] == [5]


def test_the_scenario_is_in_time_order_and_covers_every_machine() -> None:
    played = scenario()
    assert {event.machine for event in played.events} == set(MACHINES)
    assert played.start + timedelta(days=300) > max(event.at for event in played.events)  # type: ignore[operator]
