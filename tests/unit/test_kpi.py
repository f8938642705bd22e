"""ISO 22400-2 elements and KPIs of hand-worked shifts (docs/analytics.md has the first one as
its worked example): every value below is computed by hand in the comment beside it."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from collector.analytics.equipment import Machine
from collector.analytics.kpi import CountMinute, Elements, Kpis, MachineHistory, Model, kpis
from collector.analytics.losses import Reclassification, StateSpan
from tests.unit.test_losses import DOWN, IDLE, MAPPING, RUNNING, SETUP, STOPPED, at, span

TAGS = {
    "area": "pressing",
    "line": "line-1",
    "state": {"tag": "press-1/state", "agent": "line-1"},
    "good": {"tag": "press-1/good", "agent": "line-1"},
    "product": {"tag": "press-1/program", "agent": "line-1"},
}
# Product A: 2.0 s a unit; product B: 1.5 s; no default.
PRESS = Machine.model_validate(
    {
        **TAGS,
        "products": [
            {"product": "A", "ideal_cycle_time_s": 2.0},
            {"product": "B", "ideal_cycle_time_s": 1.5},
        ],
    }
)
Span = tuple[datetime, datetime]
SHIFT: list[Span] = [(at("06:00"), at("10:00")), (at("10:30"), at("14:00"))]  # lunch 10:00-10:30

# The normal shift: 06:00-14:00 less a 30 min break = 27000 s planned busy time.
NORMAL = [
    span("06:00", "06:20", SETUP, None, "A"),  # ASUT 1200
    span("06:20", "08:00", RUNNING, None, "A"),  # APT 6000
    span("08:00", "08:30", DOWN, 1, "A"),  # ADET 1800, Material shortage: failure 1
    span("08:30", "10:00", RUNNING, None, "A"),  # APT 5400
    span("10:00", "10:30", STOPPED, None, "A"),  # the break: outside planned busy time
    span("10:30", "10:45", SETUP, None, "B"),  # ASUT 900, product change
    span("10:45", "11:30", RUNNING, None, "B"),  # APT 2700
    span("11:30", "11:40", DOWN, None, "B"),  # ADET 600, a breakdown: failure 2
    span("11:40", "12:00", RUNNING, None, "B"),  # APT 1200
    span("12:00", "12:01", DOWN, None, "B"),  # ADET 60, a minor stoppage (< 120 s)
    span("12:01", "13:00", RUNNING, None, "B"),  # APT 3540
    span("13:00", "13:20", IDLE, None, "B"),  # ADOT 1200
    span("13:20", "14:00", RUNNING, None, "B"),  # APT 2400
]
NORMAL_COUNTS = [
    CountMinute(at("07:00"), "A", 2500, 50),
    CountMinute(at("09:00"), "A", 2500, 50),  # A: 5000 good, 100 scrap
    CountMinute(at("11:00"), "B", 3000, 100),
    CountMinute(at("13:30"), "B", 3000, 100),  # B: 6000 good, 200 scrap
]


def history(
    spans: Sequence[StateSpan],
    counts: Sequence[CountMinute] = (),
    planned: Sequence[Span] = SHIFT,
    *,
    machine: Machine = PRESS,
    calendar_pdot: Sequence[Span] = (),
    reclassifications: dict[datetime, Reclassification] | None = None,
) -> MachineHistory:
    return MachineHistory(
        machine,
        MAPPING,
        spans=spans,
        counts=counts,
        planned=planned,
        calendar_pdot=calendar_pdot,
        reclassifications=reclassifications or {},
    )


def shift(spans: Sequence[StateSpan], counts: Sequence[CountMinute] = (), **kw: Any) -> Elements:
    """The elements of 06:00-14:00."""
    return history(spans, counts, **kw).elements(at("06:00"), at("14:00"))


def values(result: Kpis) -> list[float | None]:
    return [
        result.availability,
        result.effectiveness,
        result.quality_ratio,
        result.oee,
        result.nee,
        result.technical_efficiency,
        result.setup_rate,
        result.utilization_efficiency,
        result.throughput_per_h,
        result.scrap_ratio,
        result.mtbf_s,
        result.mttr_s,
    ]


def codes(result: Kpis) -> list[str]:
    return [warning.code for warning in result.working.warnings]


def test_normal_shift_elements() -> None:
    e = shift(NORMAL, NORMAL_COUNTS)
    assert e == Elements(
        pot_s=27000,  # 4 h + 3.5 h
        pdot_s=0,
        apt_s=21240,  # 6000 + 5400 + 2700 + 1200 + 3540 + 2400
        asut_s=2100,  # 1200 + 900
        adet_s=2460,  # 1800 + 600 + 60
        minor_stop_s=60,
        adot_s=1200,
        restoration_s=2400,  # the two failures: 1800 + 600
        gq=11000,  # 5000 + 6000
        sq=300,  # 100 + 200
        ideal_s=19500,  # A 5100 units x 2.0 s + B 6200 units x 1.5 s = 10200 + 9300
        fe=2,
    )
    # 21240 + 2100 + 2460 + 1200 = 27000: every second of PBT is accounted for
    assert (e.pbt_s, e.aupt_s, e.aubt_s, e.aoet_s, e.pq) == (27000, 23340, 25800, 27000, 11300)
    working = e.as_dict()
    assert (working["pbt_s"], working["apt_s"], working["pq"]) == (27000, 21240, 11300)


def test_normal_shift_kpis_iso22400() -> None:
    result = kpis(shift(NORMAL, NORMAL_COUNTS), Model.ISO22400)
    assert values(result) == pytest.approx(
        [
            21240 / 27000,  # A = APT / PBT = 0.7867
            19500 / 21240,  # E = ideal / APT = 0.9181
            11000 / 11300,  # Q = GQ / PQ = 0.9735
            19500 / 27000 * 11000 / 11300,  # OEE = A x E x Q = 0.7030
            23340 / 27000 * 19500 / 21240 * 11000 / 11300,  # NEE = AUPT / PBT x E x Q = 0.7726
            21240 / 23700,  # technical efficiency = APT / (APT + ADET)
            2100 / 23340,  # setup rate = ASUT / AUPT
            21240 / 25800,  # utilization efficiency = APT / AUBT
            11300 / 27000 * 3600,  # throughput = PQ / AOET = 1506.7 units an hour
            300 / 11300,  # scrap ratio = SQ / PQ
            21240 / 2,  # MTBF = APT / FE = 10620 s
            2400 / 2,  # MTTR = 1200 s
        ]
    )
    assert result.working.model is Model.ISO22400
    assert result.working.warnings == ()


def test_tpm_moves_minor_stoppages_from_availability_to_performance() -> None:
    elements = shift(NORMAL, NORMAL_COUNTS)
    iso, tpm = kpis(elements, Model.ISO22400), kpis(elements, Model.TPM)
    # operating = APT + minor stops = 21240 + 60 = 21300; loading = PBT - ADOT = 25800
    assert tpm.availability == pytest.approx(21300 / 25800)  # 0.8256 (ISO: 0.7867)
    assert tpm.effectiveness == pytest.approx(19500 / 21300)  # 0.9155 (ISO: 0.9181)
    assert tpm.oee == pytest.approx(19500 / 25800 * 11000 / 11300)  # 0.7357 (ISO: 0.7030)
    # the rest are ISO 22400-2's in both models
    assert tpm.quality_ratio == iso.quality_ratio
    assert values(tpm)[4:] == values(iso)[4:]
    assert tpm.working.model is Model.TPM
    assert tpm.working.elements is iso.working.elements


def test_elements_of_a_window_are_the_sum_of_its_parts() -> None:
    machine = history(NORMAL, NORMAL_COUNTS)
    hours = [machine.elements(at(f"{h:02}:00"), at(f"{h + 1:02}:00")) for h in range(6, 14)]
    assert sum(hours, Elements()) == machine.elements(at("06:00"), at("14:00"))
    # the 08:00 failure is in the 08:00-09:00 hour; its restoration there too
    assert (hours[2].fe, hours[2].restoration_s) == (1, 1800)
    # a failure across hours: counted once where it starts, with all its restoration time;
    # its delay time (ADET) is where it falls
    down = history([span("06:00", "14:00", DOWN)])
    hours = [down.elements(at(f"{h:02}:00"), at(f"{h + 1:02}:00")) for h in range(6, 14)]
    whole = down.elements(at("06:00"), at("14:00"))
    assert [(e.fe, e.restoration_s, e.adet_s) for e in hours[:2]] == [
        (1, whole.restoration_s, 3600),
        (0, 0, 3600),
    ]
    assert sum(hours, Elements()) == down.elements(at("06:00"), at("14:00"))


def test_times_add_up_in_whole_microseconds() -> None:
    # Ten running spans of 0.1 s from 06:00:00 and a minor stop of 0.3 s: APT is
    # 10 x 0.1 s = 1.0 s exactly (0.1 added ten times as floats is 0.9999999999999999), ADET
    # 0.3 s, unknown 0 (planned 06:00:00-06:00:01.3).
    tenth = timedelta(milliseconds=100)
    spans = [
        StateSpan(at("06:00") + i * tenth, at("06:00") + (i + 1) * tenth, RUNNING, None, None)
        for i in range(10)
    ]
    spans.append(StateSpan(at("06:00") + 10 * tenth, at("06:00") + 13 * tenth, DOWN, None, None))
    machine = history(spans, planned=[(at("06:00"), at("06:00") + 13 * tenth)])
    e = machine.elements(at("06:00"), at("07:00"))
    assert (e.apt_s, e.adet_s, e.minor_stop_s, e.unknown_s, e.pbt_s) == (1.0, 0.3, 0.3, 0, 1.3)


def test_failures_are_the_delays_that_are_not_minor() -> None:
    failures = history(NORMAL).failures(at("06:00"), at("14:00"))
    assert [(f.start, f.duration_s, f.reason_name) for f in failures] == [
        (at("08:00"), 1800, "Material shortage"),
        (at("11:30"), 600, None),
    ]
    with pytest.raises(ValueError, match="must end after it starts"):
        history(NORMAL).failures(at("14:00"), at("06:00"))
    with pytest.raises(ValueError, match="must end after it starts"):
        history(NORMAL).elements(at("14:00"), at("14:00"))


def test_no_planned_time_gives_null_kpis() -> None:
    counts = [CountMinute(at("07:00"), "A", 100, 0)]
    e = shift([span("06:00", "14:00", RUNNING, None, "A")], counts, planned=[])
    # nothing planned: the 8 h run and the 100 units are outside the plan
    assert (e.pot_s, e.apt_s, e.unplanned_production_s, e.pq, e.unplanned_pq) == (
        0,
        0,
        28800,
        0,
        100,
    )
    for model in Model:
        result = kpis(e, model)
        assert values(result) == [None] * 12
        assert codes(result) == ["no_planned_time", "counts_outside_plan"]
        assert "no shift in the calendar" in result.working.warnings[0].message


def test_a_shift_of_planned_downtime_only_gives_null_kpis() -> None:
    e = shift([], planned=[], calendar_pdot=[(at("06:00"), at("14:00"))])
    assert (e.pot_s, e.pdot_s, e.pbt_s) == (28800, 28800, 0)
    result = kpis(e)
    assert values(result) == [None] * 12
    assert codes(result) == ["no_planned_time"]
    assert "all of it planned downtime" in result.working.warnings[0].message


def test_a_machine_down_the_whole_shift() -> None:
    e = shift([span("06:00", "14:00", DOWN)])
    # one failure from 06:00; its 27000 s of planned busy time are ADET (the break is not)
    assert (e.adet_s, e.fe, e.restoration_s, e.apt_s, e.pq) == (27000, 1, 27000, 0, 0)
    result = kpis(e)
    assert (result.availability, result.effectiveness, result.quality_ratio, result.oee) == (
        0,  # 0 / 27000
        None,  # no APT and no counts
        None,  # 0 / 0
        None,
    )
    assert (result.technical_efficiency, result.mtbf_s, result.mttr_s) == (0, 0, 27000)
    assert (result.throughput_per_h, result.nee, result.setup_rate) == (None, None, None)
    assert codes(result) == ["no_counts"]


def test_effectiveness_above_one_is_reported_not_capped() -> None:
    # 06:00-07:00 planned (given as two overlapping spans), running all along; 2000 units of
    # A at 2.0 s = 4000 s of ideal time in 3600 s
    planned = [(at("06:00"), at("06:40")), (at("06:30"), at("07:00")), (at("06:10"), at("06:20"))]
    counts = [CountMinute(at("06:30"), "A", 2000, 0)]
    e = history([span("06:00", "07:00", RUNNING, None, "A")], counts, planned).elements(
        at("06:00"), at("07:00")
    )
    assert (e.pot_s, e.apt_s, e.ideal_s) == (3600, 3600, 4000)
    result = kpis(e)
    assert result.effectiveness == pytest.approx(4000 / 3600)  # 1.111
    assert result.oee == pytest.approx(1 * 4000 / 3600 * 1)
    assert codes(result) == ["effectiveness_above_1"]
    assert "1.111 is above 1" in result.working.warnings[0].message


def test_reclassifying_a_breakdown_as_planned_downtime_shrinks_pbt() -> None:
    maintenance = Reclassification(4, "key pw_ab12", "shift lead", at("15:00"), None)
    e = shift(NORMAL, NORMAL_COUNTS, reclassifications={at("08:00"): maintenance})
    # the 1800 s at 08:00 move from ADET to PDOT, and stop being a failure
    assert (e.pdot_s, e.pbt_s, e.adet_s, e.fe, e.restoration_s) == (1800, 25200, 660, 1, 600)
    result = kpis(e)
    assert result.availability == pytest.approx(21240 / 25200)  # 0.8429 (was 0.7867)
    assert result.oee == pytest.approx(19500 / 25200 * 11000 / 11300)
    assert (result.mtbf_s, result.mttr_s) == (21240, 600)
    assert history(NORMAL, reclassifications={at("08:00"): maintenance}).events[1].reclassified == (
        maintenance
    )


def test_an_open_event_counts_up_to_now() -> None:
    # now is 07:30: the machine has been down since 07:00 and nothing is known after now
    spans = [span("06:00", "07:00", RUNNING), span("07:00", "07:30", DOWN, 1, open=True)]
    machine = history(spans, planned=[(at("06:00"), at("08:00"))])
    (event,) = machine.events
    assert (event.end, event.duration_s, event.reason_name) == (None, 1800, "Material shortage")
    e = machine.elements(at("06:00"), at("08:00"))
    assert (e.apt_s, e.adet_s, e.unknown_s, e.fe, e.restoration_s) == (3600, 1800, 1800, 1, 1800)
    result = kpis(e)
    assert result.availability == pytest.approx(3600 / 7200)  # unknown time counts against it
    assert codes(result) == ["no_counts", "unknown_state"]
    assert result.working.warnings[1].message.startswith("1800 s of planned busy time")


def test_time_outside_the_plan_and_states_the_mapping_lacks() -> None:
    planned = [(at("06:00"), at("12:00")), (at("13:00"), at("14:00"))]
    spans = [
        span("05:00", "06:00", RUNNING, None, "A"),  # before the shift: unplanned 3600
        span("06:00", "12:30", RUNNING, None, "A"),  # APT 21600, then 1800 in calendar PDOT
        span("12:30", "13:00", STOPPED),  # calendar PDOT already
        span("13:00", "13:30", STOPPED),  # a planned stop in planned busy time: PDOT 1800
        span("13:30", "13:40", 7),  # unmapped 600
        # 13:40-14:00: nothing known, 1200 unknown
    ]
    counts = [
        CountMinute(at("05:30"), "A", 10, 0),  # outside the plan
        CountMinute(at("07:00"), "A", 100, 0),
        CountMinute(at("12:10"), "A", 3, 0),  # in calendar PDOT: outside the plan
        CountMinute(at("14:30"), "A", 0, 5),  # outside the plan
    ]
    machine = history(spans, counts, planned, calendar_pdot=[(at("12:00"), at("13:00"))])
    e = machine.elements(at("05:00"), at("15:00"))
    assert (e.pot_s, e.pdot_s, e.pbt_s) == (28800, 5400, 23400)  # 7 h + 1 h; 3600 + 1800
    # 21600 + 600 + 1200 = 23400
    assert (e.apt_s, e.unmapped_s, e.unknown_s) == (21600, 600, 1200)
    assert (e.unplanned_production_s, e.unplanned_pq, e.gq, e.ideal_s) == (5400, 18, 100, 200)
    result = kpis(e)
    assert codes(result) == ["unknown_state", "unmapped_state", "counts_outside_plan"]
    assert result.availability == pytest.approx(21600 / 23400)


def test_a_counted_product_without_ideal_cycle_time_makes_effectiveness_unknown() -> None:
    only_a = Machine.model_validate(
        {**TAGS, "products": [{"product": "A", "ideal_cycle_time_s": 2}]}
    )
    counts = [
        CountMinute(at("07:00"), "A", 100, 0),
        CountMinute(at("08:00"), "B", 50, 0),  # B has no ideal cycle time
        CountMinute(at("09:00"), "C", 0, 0),  # C has none either, but no units either
    ]
    e = shift([span("06:00", "14:00", RUNNING)], counts, machine=only_a)
    assert (e.ideal_s, e.products_without_ideal, e.pq) == (None, ("B",), 150)
    result = kpis(e)
    assert (result.effectiveness, result.oee, result.nee) == (None, None, None)
    assert result.quality_ratio == 1  # 150 / 150
    assert codes(result) == ["no_ideal_cycle_time"]
    assert result.working.warnings[0].message.startswith("no ideal cycle time for B")


def test_a_machine_without_product_tag_uses_its_default_cycle_time() -> None:
    plain = {key: value for key, value in TAGS.items() if key != "product"}
    default = Machine.model_validate({**plain, "ideal_cycle_time_s": 3.0})
    counts = [CountMinute(at("07:00"), "", 100, 0)]
    assert shift([], counts, machine=default).ideal_s == 300  # 100 x 3.0
    none = shift([], counts, machine=Machine.model_validate(plain))
    assert (none.ideal_s, none.products_without_ideal) == (None, ("",))
    (warning,) = [w for w in kpis(none).working.warnings if w.code == "no_ideal_cycle_time"]
    assert "for (no product)" in warning.message


def test_a_line_sums_elements_and_never_averages_ratios() -> None:
    def machine(spans: list[StateSpan], good: float, scrap: float, until: str) -> Elements:
        counts = [CountMinute(at("06:10"), "A", good, scrap)]
        planned = [(at("06:00"), at(until))]
        return history(spans, counts, planned).elements(at("06:00"), at("07:00"))

    one = machine([span("06:00", "07:00", RUNNING, None, "A")], 1800, 0, "07:00")
    two = machine(
        [span("06:00", "06:30", RUNNING, None, "A"), span("06:30", "07:00", DOWN)], 100, 50, "07:00"
    )
    three = machine([span("06:00", "06:30", RUNNING, None, "A")], 600, 0, "06:30")
    # OEE of each: 1 x 3600/3600 x 1 = 1; 0.5 x 300/1800 x (100/150) = 0.0556;
    # 1 x 1200/1800 x 1 = 0.6667. Their mean: 0.5741.
    each = [1.0, 0.5 * 300 / 1800 * 100 / 150, 1200 / 1800]
    assert [kpis(e).oee for e in (one, two, three)] == pytest.approx(each)
    line = one + two + three
    assert line == sum((one, two, three), Elements())
    # PBT 3600 + 3600 + 1800 = 9000; APT 3600 + 1800 + 1800 = 7200; ideal 3600 + 300 + 1200
    # = 5100; GQ 2500 of PQ 2550
    assert (line.pbt_s, line.apt_s, line.ideal_s, line.gq, line.pq) == (
        9000,
        7200,
        5100,
        2500,
        2550,
    )
    result = kpis(line)
    assert result.availability == pytest.approx(7200 / 9000)  # 0.8
    assert result.effectiveness == pytest.approx(5100 / 7200)  # 0.7083
    assert result.oee == pytest.approx(5100 / 9000 * 2500 / 2550)  # 0.5556
    assert result.oee != pytest.approx(sum(each) / 3)  # (1 + 0.0556 + 0.6667) / 3 = 0.5741


def test_an_unknown_ideal_time_stays_unknown_in_a_sum() -> None:
    unknown = Elements(apt_s=100, gq=10, ideal_s=None, products_without_ideal=("B", "X"))
    known = Elements(apt_s=100, gq=5, ideal_s=50, products_without_ideal=())
    other = Elements(ideal_s=None, products_without_ideal=("A", "B"))
    assert (unknown + known).ideal_s is None
    assert (known + unknown).ideal_s is None
    assert (known + known).ideal_s == 100
    assert (unknown + other).products_without_ideal == ("A", "B", "X")
