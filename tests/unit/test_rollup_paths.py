"""Which rollup table a series request can be answered from, without a database."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from collector.analytics.buckets import parse_interval
from collector.analytics.readings_source import SeriesRequest
from collector.analytics.rollup_source import rollup_table

START = datetime(2026, 5, 4, tzinfo=UTC)
WEEK = START + timedelta(days=7)
OLD = datetime(1930, 5, 4, tzinfo=UTC)


def asked(
    interval: str, zone: str = "UTC", start: datetime = START, end: datetime = WEEK
) -> SeriesRequest:
    return SeriesRequest([1], False, parse_interval(interval), ZoneInfo(zone), start, end)


@pytest.mark.parametrize(
    ("request_", "table"),
    [
        (asked("PT1H"), "rollups_1h"),
        (asked("PT3H"), "rollups_1h"),
        (asked("P1D", "Europe/Berlin"), "rollups_1h"),  # local midnights: whole hours of UTC
        (asked("P1M", "Europe/Berlin"), "rollups_1h"),
        (asked("PT15M"), "rollups_1m"),
        (asked("PT1H", "Asia/Kolkata"), "rollups_1m"),  # hours from 18:30 UTC
        (asked("P1D", "Asia/Kolkata"), "rollups_1m"),  # midnight is 18:30 UTC
        (asked("PT1H", end=WEEK + timedelta(minutes=1)), "rollups_1m"),
        (asked("PT90S"), None),  # buckets of 1.5 minutes
        (asked("PT1H", start=START + timedelta(seconds=1)), None),
        (asked("P1D", "Asia/Kathmandu"), "rollups_1m"),  # midnight is 18:15 UTC
        # Amsterdam kept its mean solar time, +00:19:32, until 1937.
        (asked("P1D", "Europe/Amsterdam", OLD, OLD + timedelta(days=7)), None),
    ],
)
def test_the_coarsest_table_whose_rows_each_fit_in_one_bucket(
    request_: SeriesRequest, table: str | None
) -> None:
    assert rollup_table(request_) == table


def test_text_tags_have_no_rollups() -> None:
    text = SeriesRequest([1], True, parse_interval("PT1H"), ZoneInfo("UTC"), START, WEEK)
    assert rollup_table(text) is None
