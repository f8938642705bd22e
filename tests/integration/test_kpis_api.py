"""KPIs and downtime through a real collector: batches over MQTT, the deriver, the HTTP API.

The shift is Monday 2026-03-02, early shift 06:00-14:00 Berlin (CET: 05:00-13:00 UTC) with a
lunch break 10:00-10:30 (09:00-09:30 UTC). Every expected value is worked out in comments.
"""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.analytics import histories
from collector.api import downtime
from collector.config import CollectorConfig
from shared.mqtt import MqttClient
from shared.readings import DataType, Reading
from shared.wire import Topics, encode_batch
from tests.harness import PLANT_STATES, eventually, running_collector
from tests.integration.test_equipment import call

pytestmark = pytest.mark.integration
AGENT = "line-1"


def utc(hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime(2026, 3, 2, int(hours), int(minutes), tzinfo=UTC)


def plant(machines: list[str]) -> dict[str, Any]:
    def machine(name: str) -> dict[str, Any]:
        def tag(part: str) -> dict[str, str]:
            return {"tag": f"{name}/{part}", "agent": AGENT}

        return {
            "id": name,
            "area": "pressing",
            "line": "line-1",
            "state": tag("state"),
            "reason": tag("reason"),
            "good": tag("good"),
            "scrap": tag("scrap"),
            "product": tag("product"),
            "products": [
                {"product": "A", "ideal_cycle_time_s": 2.0},
                {"product": "B", "ideal_cycle_time_s": 1.5},
            ],
        }

    return {
        "sites": [
            {
                "id": "plant-2",  # no shifts: never a current shift
                "time_zone": "UTC",
                "areas": [{"id": "pressing", "lines": [{"id": "line-1"}]}],
                "calendar": {"shifts": []},
                "loss_mapping": {
                    "states": [{"name": "running", "values": [1], "element": "production"}]
                },
                "machines": [machine("press-9")],
            },
            {
                "id": "plant-1",
                "time_zone": "Europe/Berlin",
                "production_day_start": "06:00",
                "areas": [{"id": "pressing", "lines": [{"id": "line-1"}]}],
                "calendar": {
                    "shifts": [
                        {
                            "name": "early",
                            "start": "06:00",
                            "end": "14:00",
                            "breaks": [{"start": "10:00", "end": "10:30"}],
                        }
                    ]
                },
                "loss_mapping": {
                    "states": PLANT_STATES,
                    "reasons": [
                        {"value": 3, "name": "Jam", "element": "delay", "tpm": "minor_stop"},
                        {
                            "value": 4,
                            "name": "Maintenance",
                            "element": "planned_downtime",
                            "states": ["down"],
                        },
                        {"value": 5, "name": "No operator", "element": "delay"},
                    ],
                },
                "machines": [machine(name) for name in machines],
            },
        ]
    }


# (UTC time, tag, value) of press-1's shift.
SHIFT: list[tuple[str, str, Any]] = [
    ("05:00", "state", 1),
    ("05:00", "reason", 0),
    ("05:00", "product", "A"),
    ("05:00", "good", 0),
    ("05:00", "scrap", 0),
    ("07:00", "good", 3000),  # 3000 A units ... counted at 07:00, still product A
    ("07:00", "scrap", 100),  # ... and 100 A scrapped
    ("07:00", "state", 3),
    ("07:00", "reason", 5),  # down, no operator: a failure, 07:00-07:30
    ("07:10", "reason", 6),  # a code the mapping lacks: the stop keeps its first reason
    ("07:30", "state", 4),
    ("07:30", "reason", 0),  # setup 07:30-08:00
    ("08:00", "state", 1),
    ("08:00", "product", "B"),
    ("11:00", "state", 3),
    ("11:00", "reason", 3),  # a jam: a minor stoppage, 60 s
    ("11:01", "state", 1),
    ("11:01", "reason", 0),
    ("12:59", "good", 7800),  # 4800 B units
    ("12:59", "scrap", 300),  # 200 B scrapped
    ("13:00", "state", 2),  # idle after the shift: outside planned time
]
TYPES = {"state": DataType.UINT16, "reason": DataType.UINT16, "good": DataType.UINT32}
TYPES |= {"scrap": DataType.UINT32, "product": DataType.STRING}


async def publish(publisher: MqttClient, prefix: str, device: str, seq: int) -> int:
    readings = [
        Reading(device, tag, TYPES[tag], int(utc(at).timestamp() * 1_000_000), value)
        for at, tag, value in SHIFT
    ]
    seqs = list(range(seq, seq + len(readings)))
    await publisher.publish(
        Topics(prefix).batch(AGENT), encode_batch(AGENT, 1, seqs, readings), timeout=5
    )
    return seq + len(readings)


@pytest.fixture
async def collector(
    plant_collector_config: Callable[..., CollectorConfig],
    tmp_path: Path,
    publisher: MqttClient,
    topic_prefix: str,
) -> AsyncIterator[str]:
    equipment = tmp_path / "equipment.yaml"
    equipment.write_text(yaml.safe_dump(plant(["press-1", "press-2"])))
    config = plant_collector_config(
        sections={
            "rate_limits": {"enabled": False},
            "equipment": {"file": str(equipment)},
            "analytics": {"derive_interval": "100ms", "max_groups": 5},
        }
    )
    async with running_collector(config) as base:
        seq = await publish(publisher, topic_prefix, "press-1", 1)
        await publish(publisher, topic_prefix, "press-2", seq)

        async def derived() -> bool:
            status, body = await call("GET", f"{base}/api/v1/downtime", params=WINDOW)
            return status == 200 and len(body["events"]) == 6

        await eventually(derived, timeout=20, what="both machines' stops derived")
        yield base


SHIFT_WINDOW = {"from": "2026-03-02T05:00:00Z", "to": "2026-03-02T13:00:00Z"}
WINDOW = {"site": "plant-1", **SHIFT_WINDOW}
# Planned busy time: 8 h - 30 min break = 27000 s.
# Running: 05:00-07:00 (7200) + 08:00-11:00 less the break (10800 - 1800 = 9000)
#          + 11:01-13:00 (7140) = APT 23340 s; the 1800 s run through the break is unplanned.
# Delay: the failure 07:00-07:30 (1800) + the jam (60, minor) = ADET 1860 s; setup ASUT 1800 s.
# 23340 + 1860 + 1800 = 27000: every planned second is known.
# Counts: A 3000 good + 100 scrap, B 4800 good + 200 scrap: GQ 7800, SQ 300, PQ 8100.
# Ideal time: 3100 x 2.0 + 5000 x 1.5 = 6200 + 7500 = 13700 s.
APT, PBT, IDEAL, GQ, PQ = 23340.0, 27000.0, 13700.0, 7800.0, 8100.0


async def test_one_machine_s_shift_by_hand(collector: str) -> None:
    status, body = await call(
        "GET", f"{collector}/api/v1/kpis", params={**WINDOW, "machine": "press-1"}
    )
    assert status == 200, body
    total = body["total"]
    elements = total["working"]["elements"]
    assert elements["pbt_s"] == PBT
    assert elements["apt_s"] == APT
    assert elements["adet_s"] == 1860.0
    assert elements["minor_stop_s"] == 60.0
    assert elements["asut_s"] == 1800.0
    assert elements["unknown_s"] == 0.0
    assert elements["unplanned_production_s"] == 1800.0
    assert (elements["gq"], elements["sq"], elements["pq"]) == (GQ, 300.0, PQ)
    assert elements["ideal_s"] == IDEAL
    assert elements["fe"] == 1
    kpis = total["kpis"]
    assert kpis["availability"] == pytest.approx(APT / PBT)  # 0.8644
    assert kpis["effectiveness"] == pytest.approx(IDEAL / APT)  # 0.5870
    assert kpis["quality_ratio"] == pytest.approx(GQ / PQ)  # 0.9630
    assert kpis["oee"] == pytest.approx(IDEAL / PBT * GQ / PQ)  # 0.4886
    assert kpis["mtbf_s"] == APT
    assert kpis["mttr_s"] == 1800.0
    assert kpis["technical_efficiency"] == pytest.approx(APT / (APT + 1860))
    assert kpis["setup_rate"] == pytest.approx(1800 / (APT + 1800))
    assert kpis["scrap_ratio"] == pytest.approx(300 / PQ)
    assert [event["start"] for event in total["failure_events"]] == ["2026-03-02T07:00:00Z"]
    assert total["working"]["model"] == "iso22400"
    # TPM: the jam is running time lost to speed, not availability.
    status, body = await call(
        "GET", f"{collector}/api/v1/kpis", params={**WINDOW, "machine": "press-1", "model": "tpm"}
    )
    tpm = body["total"]["kpis"]
    assert tpm["availability"] == pytest.approx((APT + 60) / PBT)
    assert tpm["effectiveness"] == pytest.approx(IDEAL / (APT + 60))
    assert tpm["oee"] == pytest.approx(kpis["oee"])


async def test_a_line_sums_its_machines_and_groups_add_up(collector: str) -> None:
    status, body = await call(
        "GET",
        f"{collector}/api/v1/kpis",
        params={**WINDOW, "line": "line-1", "group_by": "shift", "by_machine": "true"},
    )
    assert status == 200, body
    assert body["machines"] == ["press-1", "press-2"]
    (group,) = body["groups"]
    assert group["key"] == "2026-03-02/early"
    elements = group["working"]["elements"]
    assert elements["apt_s"] == 2 * APT
    assert elements["pq"] == 2 * PQ
    assert elements["fe"] == 2
    assert group["kpis"]["oee"] == pytest.approx(IDEAL / PBT * GQ / PQ)
    assert [part["machine"] for part in group["machines"]] == ["press-1", "press-2"]
    status, body = await call(
        "GET", f"{collector}/api/v1/kpis", params={**WINDOW, "group_by": "hour"}
    )
    assert status == 422, body
    assert body["invalid_params"][0]["name"] == "group_by"


async def test_downtime_events_paretos_and_states(collector: str) -> None:
    status, body = await call(
        "GET", f"{collector}/api/v1/downtime", params={**WINDOW, "machine": "press-1"}
    )
    assert status == 200, body
    events = [
        (e["start"], e["state_name"], e["reason"], e["iso_element"], e["minor"])
        for e in body["events"]
    ]
    assert events == [
        ("2026-03-02T07:00:00Z", "down", 5, "ADET", False),
        ("2026-03-02T07:30:00Z", "setup", 0, "ASUT", False),
        ("2026-03-02T11:00:00Z", "down", 3, "ADET", True),
    ]
    assert [(bar["label"], bar["seconds"]) for bar in body["by_reason"]] == [
        ("0", 1800.0),  # a tie: by label
        ("No operator", 1800.0),
        ("Jam", 60.0),
    ]
    states = {row["state"]: row["seconds"] for row in body["states"][0]["states"]}
    # The window is 8 h = 28800 s: running 23340 + 1800 through the break.
    assert states == {
        "stopped": 0.0,
        "running": 25140.0,
        "idle": 0.0,
        "down": 1860.0,
        "setup": 1800.0,
        None: 0.0,
    }


async def test_an_operator_reclassifies_a_stop_and_the_kpis_follow(collector: str) -> None:
    status, viewer = await call(
        "POST", f"{collector}/api/v1/api-keys", json={"name": "viewer", "role": "viewer"}
    )
    assert status == 201, viewer
    change = {
        "site": "plant-1",
        "machine": "press-1",
        "start": "2026-03-02T07:00:00Z",
        "reason": 4,
        "note": "planned maintenance, entered late",
    }
    url = f"{collector}/api/v1/downtime/reclassifications"
    status, body = await call("POST", url, key=viewer["key"], json=change)
    assert status == 403, body
    status, body = await call("POST", url, json={**change, "start": "2026-03-02T07:01:00Z"})
    assert status == 404, body
    assert body["invalid_params"][0]["name"] == "start"
    status, body = await call("POST", url, json={**change, "reason": 99})
    assert status == 422, body
    assert body["invalid_params"][0]["name"] == "reason"
    status, body = await call("POST", url, json=change)
    assert status == 200, body
    assert body["stop"]["element"] == "planned_downtime"
    assert body["stop"]["reclassified"]["note"] == change["note"]
    assert body["change"]["by"].startswith("key ")
    status, body = await call(
        "GET", f"{collector}/api/v1/kpis", params={**WINDOW, "machine": "press-1"}
    )
    # Maintenance is planned downtime: PBT 27000 - 1800 = 25200, and no failure is left.
    assert body["total"]["working"]["elements"]["pbt_s"] == 25200.0
    assert body["total"]["kpis"]["availability"] == pytest.approx(APT / 25200)
    assert body["total"]["kpis"]["mtbf_s"] is None
    status, body = await call("GET", url, params={"site": "plant-1", "machine": "press-1"})
    assert status == 200
    assert [item["reason"] for item in body["items"]] == [4]
    status, body = await call(
        "GET", url, params={"site": "plant-1", "before": str(body["items"][0]["id"])}
    )
    assert body["items"] == []


@pytest.mark.parametrize(
    ("params", "status", "name"),
    [
        ({"site": "nowhere", **SHIFT_WINDOW}, 404, "site"),
        ({**WINDOW, "machine": "press-9"}, 404, "machine"),
        ({**WINDOW, "area": "welding"}, 404, "area"),
        ({**WINDOW, "window": "today"}, 422, "window"),
        ({"site": "plant-2", "window": "current_shift"}, 422, "window"),
        (
            {"site": "plant-1", "from": "0001-01-01T00:00:00Z", "to": SHIFT_WINDOW["to"]},
            422,
            "from",
        ),
        (
            {"site": "plant-1", "from": SHIFT_WINDOW["from"], "to": "9999-01-01T00:00:00Z"},
            422,
            "to",
        ),
        ({"site": "plant-1"}, 422, "from"),
        ({"site": "plant-1", "from": SHIFT_WINDOW["from"]}, 422, "to"),
        ({"site": "plant-1", "from": SHIFT_WINDOW["to"], "to": SHIFT_WINDOW["from"]}, 422, "from"),
        (
            {"site": "plant-1", "from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            422,
            "to",
        ),
    ],
)
async def test_bad_scopes_and_windows_are_named(
    collector: str, params: dict[str, str], status: int, name: str
) -> None:
    got, body = await call("GET", f"{collector}/api/v1/kpis", params=params)
    assert got == status, body
    assert body["invalid_params"][0]["name"] == name


async def test_relative_windows_and_windows_still_to_come(collector: str) -> None:
    status, body = await call(
        "GET", f"{collector}/api/v1/kpis", params={"site": "plant-1", "window": "yesterday"}
    )
    assert status == 200, body
    # No data yesterday: nothing is assumed.
    assert body["total"]["kpis"]["oee"] is None
    status, body = await call(
        "GET",
        f"{collector}/api/v1/kpis",
        params={"site": "plant-1", "from": "2099-01-01T00:00:00Z", "to": "2099-01-02T00:00:00Z"},
    )
    assert status == 200
    assert body["groups"] == []
    assert body["total"]["kpis"]["availability"] is None
    status, body = await call(
        "GET",
        f"{collector}/api/v1/downtime",
        params={"site": "plant-1", "from": "2099-01-01T00:00:00Z", "to": "2099-01-02T00:00:00Z"},
    )
    assert status == 200
    assert body["events"] == []
    assert body["states"][0]["states"] == []


async def test_a_window_starting_inside_a_stop_sees_all_of_it(
    collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(histories, "_WALK", 1)  # follow a stop one span at a time
    params = {**WINDOW, "machine": "press-1", "from": "2026-03-02T07:20:00Z"}
    status, body = await call("GET", f"{collector}/api/v1/downtime", params=params)
    assert status == 200, body
    first = body["events"][0]
    assert (first["start"], first["duration_s"], first["reason"]) == (
        "2026-03-02T07:00:00Z",
        1800.0,
        5,
    )
    # Its time in the window: 07:20-07:30; the setup 1800 s comes first, the jam last.
    assert body["by_reason"][1] == {
        "label": "No operator",
        "reason": 5,
        "element": None,
        "tpm": None,
        "seconds": 600.0,
        "events": 1,
        "share": pytest.approx(600 / (600 + 1800 + 60)),
    }


async def test_too_many_stops_or_unknown_equipment_are_refused(
    collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(histories, "MAX_SPANS", 3)
    for path in ("kpis", "downtime"):
        status, body = await call("GET", f"{collector}/api/v1/{path}", params=WINDOW)
        assert status == 422, body
        assert "state spans" in body["invalid_params"][0]["reason"]
    monkeypatch.setattr(histories, "MAX_SPANS", 1000)
    monkeypatch.setattr(downtime, "MAX_EVENTS", 2)
    status, body = await call("GET", f"{collector}/api/v1/downtime", params=WINDOW)
    assert status == 422, body
    assert body["invalid_params"][0]["name"] == "from"
    url = f"{collector}/api/v1/downtime/reclassifications"
    change = {"site": "plant-1", "machine": "press-1", "start": SHIFT_WINDOW["from"], "reason": 5}
    for wrong, name, code in [
        ({"site": "nowhere"}, "site", 404),
        ({"machine": "press-7"}, "machine", 404),
        ({"start": "9999-12-31T23:59:59.999999Z"}, "start", 422),
    ]:
        status, body = await call("POST", url, json={**change, **wrong})
        assert status == code, body
        assert body["invalid_params"][0]["name"] == name


async def test_a_window_ending_inside_a_stop_sees_all_of_it(collector: str) -> None:
    params = {**WINDOW, "machine": "press-1", "to": "2026-03-02T07:05:00Z"}
    status, body = await call("GET", f"{collector}/api/v1/downtime", params=params)
    assert status == 200, body
    (stop,) = body["events"]
    # The stop's spans (07:00-07:10 with reason 5, 07:10-07:30 with reason 6) are all read.
    assert (stop["start"], stop["end"], stop["duration_s"]) == (
        "2026-03-02T07:00:00Z",
        "2026-03-02T07:30:00Z",
        1800.0,
    )
    assert body["by_reason"][0]["seconds"] == 300.0  # its time in the window: 07:00-07:05
