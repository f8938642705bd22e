"""Every rule of the equipment model, each refusal naming its field; the sample file loads."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from collector.analytics.equipment import (
    LossMapping,
    Machine,
    Plant,
    Site,
    TimeElement,
    code_key,
    load_plant,
)
from collector.config import CollectorConfig, EquipmentSettings
from shared.config import load_config
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "equipment.yaml"


def plant() -> dict[str, Any]:
    return dict(yaml.safe_load(SAMPLE.read_text()))


def site(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(plant()["sites"][0])
    del document["id"], document["machines"]
    document.update(changes)
    return dict(document)


def machine(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(plant()["sites"][0]["machines"][0])
    del document["id"]
    document.update(changes)
    return dict(document)


def refused(model: type[Any], document: dict[str, Any]) -> tuple[str, str]:
    """Where (dotted) and why the model refuses the document."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(document)
    error = caught.value.errors()[0]
    return ".".join(str(part) for part in error["loc"]), str(error["msg"])


def test_the_sample_file_loads_and_maps_codes_to_states() -> None:
    loaded = load_plant(SAMPLE)
    entry = loaded.sites[0]
    assert (loaded.enterprise, entry.id, entry.time_zone) == (
        "Acme Components",
        "plant-1",
        "Europe/Berlin",
    )
    mapping = entry.loss_mapping
    assert mapping.microstop_threshold_s == 120
    assert [mapping.state_of(v) for v in (1, 3.0, 9, None, "1", True)] == [
        "running",
        "down",
        None,
        None,
        None,
        None,
    ]
    press = entry.machines[0]
    assert [role for role, _ in press.tags()] == ["state", "reason", "good", "scrap", "product"]
    assert (press.state.device, press.state.name) == ("sim-modbus", "state")
    assert entry.site().has_line("pressing", "line-1")
    assert not entry.site().has_line("pressing", "line-2")


def test_codes_compare_by_kind() -> None:
    assert code_key(True) != code_key(1)
    assert code_key(2.0) == code_key(2)
    assert code_key(2.5) == ("number", 2.5)
    assert code_key("2") == ("text", "2")


def test_a_minimal_machine_and_mapping_take_defaults() -> None:
    minimal = Machine.model_validate(
        {
            "area": "a",
            "line": "l",
            "state": {"tag": "d/s", "agent": "x"},
            "good": {"tag": "d/g", "agent": "x", "kind": "delta"},
        }
    )
    assert (minimal.reason, minimal.scrap, minimal.products) == (None, None, [])
    assert [role for role, _ in minimal.tags()] == ["state", "good"]
    mapping = LossMapping.model_validate(
        {"states": [{"name": "run", "values": [True], "element": "production"}]}
    )
    assert mapping.microstop_threshold_s == 120.0
    assert mapping.states[0].element is TimeElement.PRODUCTION


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        (
            {"good": {"tag": "d/g", "agent": "x", "kind": "delta", "rollover": 65536}},
            "good.rollover",
            "only a cumulative counter",
        ),
        ({"good": {"tag": "d/g", "agent": "x", "rollover": 1000}}, "good.rollover", "65536"),
        (
            {"scrap": {"tag": "sim-modbus/good_count", "agent": "line-1"}},
            "scrap",
            "good counter's tag",
        ),
        ({"product": None}, "products", "needs the `product` tag"),
        (
            {
                "products": [
                    {"product": "A", "ideal_cycle_time_s": 1},
                    {"product": "A", "ideal_cycle_time_s": 2},
                ]
            },
            "products",
            "repeated: A",
        ),
        ({"ideal_cycle_time_s": 0}, "ideal_cycle_time_s", "greater than 0"),
        ({"ideal_cycle_time_s": "2"}, "ideal_cycle_time_s", "valid number"),
        ({"state": {"tag": "no-slash", "agent": "x"}}, "state.tag", "pattern"),
        ({"state": {"tag": "d/s"}}, "state.agent", "Field required"),
        ({"area": "bad area"}, "area", "pattern"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_a_machine_is_refused_naming_the_field(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    where, why = refused(Machine, machine(**changes))
    assert where == field
    assert reason in why


def calendar(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(site()["calendar"])
    document.update(changes)
    return dict(document)


BREAK = {"start": "07:00", "end": "07:10"}


def shift(name: str, start: str, end: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "start": start, "end": end, **more}


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone", "not an IANA time zone"),
        ({"time_zone": "../etc/passwd"}, "time_zone", "not an IANA time zone"),
        ({"time_zone": "Europe"}, "time_zone", "not an IANA time zone"),  # a folder of zones
        ({"time_zone": "posixrules"}, "time_zone", "not an IANA time zone"),
        ({"production_day_start": "24:00"}, "production_day_start", "pattern"),
        ({"areas": []}, "areas", "at least 1"),
        (
            {"areas": [{"id": "a", "lines": [{"id": "l"}]}, {"id": "a", "lines": [{"id": "m"}]}]},
            "areas",
            "repeated: a",
        ),
        (
            {"areas": [{"id": "a", "lines": [{"id": "l"}, {"id": "l"}]}]},
            "areas.0.lines",
            "repeated: l",
        ),
        (
            {"calendar": calendar(shifts=[shift("a", "06:00", "06:00")])},
            "calendar.shifts.0.end",
            "equals start",
        ),
        (
            # A bad start is named once: the breaks are not checked against it.
            {"calendar": calendar(shifts=[shift("a", "6:00", "14:00", breaks=[BREAK])])},
            "calendar.shifts.0.start",
            "pattern",
        ),
        (
            {"calendar": calendar(shifts=[shift("a", "06:00", "14:00", days=["mon", "mon"])])},
            "calendar.shifts.0.days",
            "repeated: mon",
        ),
        (
            {"calendar": calendar(shifts=[shift("a", "06:00", "14:00", days=["someday"])])},
            "calendar.shifts.0.days.0",
            "'mon'",
        ),
        (
            {
                "calendar": calendar(
                    shifts=[shift("a", "06:00", "14:00"), shift("a", "14:00", "22:00")]
                )
            },
            "calendar.shifts",
            "repeated: a",
        ),
        (
            {
                "calendar": calendar(
                    shifts=[shift("a", "06:00", "14:00"), shift("b", "13:00", "22:00")]
                )
            },
            "calendar.shifts",
            "b overlaps a on mon",
        ),
        # A night shift from Sunday spills into Monday's early shift.
        (
            {
                "calendar": calendar(
                    shifts=[
                        shift("early", "05:00", "13:00", days=["mon"]),
                        shift("night", "22:00", "06:00", days=["sun"]),
                    ]
                )
            },
            "calendar.shifts",
            "early overlaps night on mon",
        ),
        (
            {
                "calendar": calendar(
                    shifts=[
                        shift("a", "06:00", "14:00", breaks=[{"start": "13:30", "end": "14:30"}])
                    ]
                )
            },
            "calendar.shifts.0.breaks",
            "[0] 13:30-14:30 is not within 06:00-14:00",
        ),
        (
            {
                "calendar": calendar(
                    shifts=[
                        shift(
                            "a",
                            "22:00",
                            "06:00",
                            breaks=[
                                {"start": "05:00", "end": "05:30"},
                                {"start": "05:15", "end": "05:45"},
                            ],
                        )
                    ]
                )
            },
            "calendar.shifts.0.breaks",
            "[1] overlaps [0]",
        ),
        (
            {
                "calendar": calendar(
                    shifts=[
                        shift("a", "22:00", "06:00", breaks=[{"start": "21:00", "end": "22:30"}])
                    ]
                )
            },
            "calendar.shifts.0.breaks",
            "not within",
        ),
        (
            {"calendar": calendar(days_off=["2026-12-24", "2026-12-24"])},
            "calendar.days_off",
            "repeated: 2026-12-24",
        ),
        (
            {"calendar": calendar(planned_downtime=[{"start": "12:00", "end": "12:00"}])},
            "calendar.planned_downtime.0.end",
            "equals start",
        ),
    ],
)
def test_a_site_is_refused_naming_the_field(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    where, why = refused(Site, site(**changes))
    assert where == field
    assert reason in why


def test_shifts_may_cross_midnight_and_breaks_may_too() -> None:
    pauses = [{"start": "03:00", "end": "03:20"}, {"start": "23:30", "end": "00:15"}]
    night = shift("night", "22:00", "06:00", days=["sun"], breaks=pauses)
    early = shift("early", "06:00", "14:00", days=["mon"])
    parsed = Site.model_validate(site(calendar=calendar(shifts=[night, early])))
    spans = list(parsed.calendar.shifts[0].minutes_of_week())
    assert spans == [(6 * 1440 + 22 * 60, 7 * 1440), (0, 6 * 60)]
    assert parsed.calendar.shifts[1].days == ["mon"]
    # A site with no shifts has no planned time: allowed (KPIs are null).
    assert Site.model_validate(site(calendar={"shifts": []})).calendar.shifts == []


def states(*entries: tuple[str, list[Any], str]) -> list[dict[str, Any]]:
    return [{"name": n, "values": v, "element": e} for n, v, e in entries]


RUN = ("run", [1], "production")
DOWN = ("down", [3], "delay")


@pytest.mark.parametrize(
    ("mapping", "field", "reason"),
    [
        ({"states": []}, "states", "at least 1"),
        ({"states": states(("stop", [0], "delay"))}, "states", "none is production"),
        ({"states": states(RUN, ("run", [2], "delay"))}, "states", "repeated: run"),
        ({"states": states(RUN, ("stop", [1], "delay"))}, "states", "repeated: 1"),
        ({"states": states(RUN, ("x", [1.5], "delay"))}, "states.1.values.0.bool", "valid boolean"),
        (
            {
                "states": [
                    {"name": "run", "values": [1], "element": "production", "tpm": "breakdown"}
                ]
            },
            "states.0.tpm",
            "breakdown is not a loss of production time (allowed: none)",
        ),
        (
            {
                "states": [
                    *states(RUN),
                    {"name": "d", "values": [3], "element": "delay", "tpm": "setup_adjustment"},
                ]
            },
            "states.1.tpm",
            "allowed: breakdown, minor_stop",
        ),
        (
            {"states": states(RUN), "microstop_threshold_s": -1},
            "microstop_threshold_s",
            "greater than or equal to 0",
        ),
        ({"states": states(RUN, ("wait", [2], "warp"))}, "states.1.element", "'production'"),
        (
            {
                "states": states(RUN, DOWN),
                "reasons": [
                    {"value": 1, "name": "a", "element": "delay"},
                    {"value": 1, "name": "b", "element": "setup"},
                ],
            },
            "reasons",
            "repeated: 1",
        ),
        (
            {
                "states": states(RUN, DOWN),
                "reasons": [{"value": 1, "name": "a", "element": "production"}],
            },
            "reasons.0.element",
            "production is not one",
        ),
        (
            {
                "states": states(RUN, DOWN),
                "reasons": [
                    {"value": 1, "name": "a", "element": "delay", "tpm": "setup_adjustment"}
                ],
            },
            "reasons.0.tpm",
            "not a loss of delay time",
        ),
        (
            {
                "states": states(RUN, DOWN),
                "reasons": [{"value": 1, "name": "a", "element": "delay", "states": ["run"]}],
            },
            "reasons",
            "[0].states: run is production",
        ),
        (
            {
                "states": states(RUN, DOWN),
                "reasons": [{"value": 1, "name": "a", "element": "delay", "states": ["broken"]}],
            },
            "reasons",
            "[0].states: no state named broken",
        ),
    ],
)
def test_a_loss_mapping_is_refused_naming_the_field(
    mapping: dict[str, Any], field: str, reason: str
) -> None:
    where, why = refused(LossMapping, mapping)
    assert where == field
    assert reason in why


def test_a_reason_mapping_with_bad_states_is_not_checked_twice() -> None:
    # The states are refused; the reasons are not checked against them as well.
    with pytest.raises(ValidationError) as caught:
        LossMapping.model_validate(
            {"states": [], "reasons": [{"value": 1, "name": "a", "element": "delay"}]}
        )
    assert [e["loc"] for e in caught.value.errors()] == [("states",)]


def test_true_and_one_are_different_codes() -> None:
    mapping = LossMapping.model_validate(
        {"states": states(("run", [True], "production"), ("down", [1], "delay"))}
    )
    assert (mapping.state_of(True), mapping.state_of(1)) == ("run", "down")


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda p: p["sites"].append(copy.deepcopy(p["sites"][0])), "sites", "repeated: plant-1"),
        (
            lambda p: p["sites"][0]["machines"].append(copy.deepcopy(p["sites"][0]["machines"][0])),
            "sites.0",
            "repeated: press-1",
        ),
        (
            lambda p: p["sites"][0]["machines"][0].update(line="line-9"),
            "sites.0",
            "machines[0] (press-1): pressing/line-9 is not a line",
        ),
        (
            lambda p: p["sites"][0]["machines"][0].update(area="welding"),
            "sites.0",
            "machines[0] (press-1): welding/line-1 is not a line",
        ),
    ],
)
def test_a_plant_is_refused_naming_the_entry(change: Any, field: str, reason: str) -> None:
    document = plant()
    change(document)
    where, why = refused(Plant, document)
    assert where == field
    assert reason in why


def test_a_bad_equipment_file_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    broken = plant()
    broken["sites"][0]["time_zone"] = "Europe/Atlantis"
    equipment = tmp_path / "equipment.yaml"
    equipment.write_text(yaml.safe_dump(broken))
    config = tmp_path / "collector.yaml"
    config.write_text(
        "database: {url: postgresql://x@y/z}\nmqtt: {url: mqtt://127.0.0.1:1883}\n"
        f"equipment: {{file: {equipment}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, CollectorConfig, {})
    message = str(caught.value)
    assert "equipment: " in message
    assert f"{equipment}: invalid configuration" in message
    assert "sites.0.time_zone: 'Europe/Atlantis' is not an IANA time zone" in message
    with pytest.raises(ValidationError, match="cannot read configuration"):
        EquipmentSettings.model_validate({"file": str(tmp_path / "missing.yaml")})


def test_without_a_file_there_is_no_plant() -> None:
    settings = EquipmentSettings()
    assert (settings.plant, settings.status_interval) == (None, 10.0)
    assert EquipmentSettings.model_validate({"file": str(SAMPLE)}).plant == load_plant(SAMPLE)
