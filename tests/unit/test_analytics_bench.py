"""make bench-analytics' own logic: its plant, its calendar for the bare SQL, its verdicts."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bench.analytics_bench import (
    equipment,
    ingest_machines,
    percentile,
    planned_segments,
    plant_machines,
    production_days,
    result_line,
    verdict,
)
from collector.analytics.calendar import group_windows
from collector.analytics.equipment import Plant

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_bench_plant_is_a_valid_equipment_model() -> None:
    machines = plant_machines(20)
    plant = Plant.model_validate(equipment(machines))
    site = plant.sites[0]
    assert site.time_zone == "Europe/Berlin"
    assert [m.id for m in site.machines] == [f"m-{n:02d}" for n in range(1, 21)]
    assert {m.line for m in site.machines} == {"line-1", "line-2"}
    assert sum(m.line == "line-1" for m in site.machines) == 10
    assert all(20 <= m.cycle_s <= 40 for m in machines)


def test_ingest_machines_use_distinct_ingested_tags() -> None:
    machines = ingest_machines(20, 4)
    Plant.model_validate(equipment(machines))
    used = [(m.agent, tag) for m in machines for tag in m.tags.values()]
    assert len(set(used)) == 20 * 5
    # make_batches names tags t00000 ... of device `machine`: 2000 per agent.
    assert max(int(tag.split("/t")[1]) for _, tag in used) < 2000


def test_planned_segments_are_the_shifts_less_breaks_keyed_as_the_api_keys_them() -> None:
    # Monday 2 March 2026, Berlin is UTC+1: early 05:00-13:00 UTC less 09:00-09:30.
    start, end = datetime(2026, 3, 2, 5, tzinfo=UTC), datetime(2026, 3, 3, 5, tzinfo=UTC)
    segments = planned_segments(start, end, BERLIN)
    assert segments == [
        ("2026-03-02/early", "2026-03-02", start, datetime(2026, 3, 2, 9, tzinfo=UTC)),
        (
            "2026-03-02/early",
            "2026-03-02",
            datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
            datetime(2026, 3, 2, 13, tzinfo=UTC),
        ),
        (
            "2026-03-02/late",
            "2026-03-02",
            datetime(2026, 3, 2, 13, tzinfo=UTC),
            datetime(2026, 3, 2, 17, tzinfo=UTC),
        ),
        (
            "2026-03-02/late",
            "2026-03-02",
            datetime(2026, 3, 2, 17, 30, tzinfo=UTC),
            datetime(2026, 3, 2, 21, tzinfo=UTC),
        ),
        ("2026-03-02/night", "2026-03-02", datetime(2026, 3, 2, 21, tzinfo=UTC), end),
    ]


def test_planned_segments_match_the_collector_s_shift_groups_across_dst() -> None:
    # Spring forward on Sunday 29 March 2026: two weeks around it, every shift the same key
    # and span as the collector's own calendar gives.
    site = Plant.model_validate(equipment(plant_machines(1))).sites[0]
    start, end = datetime(2026, 3, 23, 5, tzinfo=UTC), datetime(2026, 4, 6, 4, tzinfo=UTC)
    segments = planned_segments(start, end, BERLIN)
    spans: dict[str, tuple[datetime, datetime]] = {}
    for key, _, lo, hi in segments:
        first = spans.get(key, (lo, hi))[0]
        spans[key] = (first, hi)
    groups = {g.key: (g.start, g.end) for g in group_windows(site, start, end, "shift")}
    assert spans == groups
    # No night shift on Friday, no shift at the weekend.
    assert "2026-03-27/late" in spans
    assert "2026-03-27/night" not in spans
    assert not any(key.startswith(("2026-03-28", "2026-03-29")) for key in spans)


def test_production_days_end_at_the_last_six_o_clock_in_berlin() -> None:
    # 2026-03-30 04:30 UTC is 06:30 CEST: the production day of the 30th has begun.
    start, end = production_days(datetime(2026, 3, 30, 4, 30, tzinfo=UTC), 2, BERLIN)
    assert end == datetime(2026, 3, 30, 4, tzinfo=UTC)
    # Two days back crosses the change to summer time: 06:00 CET is 05:00 UTC.
    assert start == datetime(2026, 3, 28, 5, tzinfo=UTC)
    # At 05:30 CEST the day of the 29th still runs.
    _, end = production_days(datetime(2026, 3, 30, 3, 30, tzinfo=UTC), 1, BERLIN)
    assert end == datetime(2026, 3, 29, 4, tzinfo=UTC)


def test_percentile_interpolates() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile(list(map(float, range(1, 21))), 0.9) == pytest.approx(18.1)
    assert percentile([7.0], 0.9) == 7.0


def test_verdicts_and_the_result_line() -> None:
    assert verdict("year_chart_ms", 99.9) == "ok"
    assert verdict("year_chart_ms", 100.0) == "MISSED"
    assert verdict("ingest_ratio", 0.8) == "ok"
    assert verdict("ingest_ratio", 0.79) == "MISSED"
    figures = {"year_chart_ms": 4.21, "day_minutes_ms": 11.5, "oee_14d_ms": 8.7}
    figures |= {"site_rollup_ms": 24.66, "ingest_ratio": 0.8123, "backfill_s": 41.7}
    assert result_line(figures) == (
        "RESULT year_chart_ms=4.2 day_minutes_ms=11.5 oee_14d_ms=8.7 site_rollup_ms=24.7"
        " ingest_ratio=0.812 backfill_s=41.7"
    )
