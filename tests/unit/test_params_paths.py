"""Shared parameter types: the command line's times and limits, and the API's query times."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from collector.api.params import parse_limit, parse_time
from collector.api.problems import InvalidParam, ProblemError
from collector.api.readings import ReadingsQuery

DEFAULT = datetime(2026, 1, 31, tzinfo=UTC)


def test_parse_time_takes_the_default_when_absent_and_names_a_bad_value() -> None:
    assert parse_time("time", None, DEFAULT) is DEFAULT
    assert parse_time("time", "2026-02-01T08:00:00Z", DEFAULT) == datetime(
        2026, 2, 1, 8, tzinfo=UTC
    )
    with pytest.raises(ProblemError) as bad:
        parse_time("time", "yesterday", DEFAULT)
    assert bad.value.status == 400
    reason = "expected an RFC 3339 timestamp such as 2026-01-31T08:00:00Z, got 'yesterday'"
    assert list(bad.value.invalid) == [InvalidParam("time", reason)]
    with pytest.raises(ProblemError, match="needs a time zone"):
        parse_time("time", "2026-02-01T08:00:00", DEFAULT)


@pytest.mark.parametrize("raw", ["0", "51", "-1", "ten", "1.5", ""])
def test_parse_limit_refuses_anything_but_a_whole_number_in_range(raw: str) -> None:
    with pytest.raises(ProblemError) as bad:
        parse_limit(raw, 50)
    assert bad.value.status == 400
    reason = f"expected a whole number from 1 to 50, got {raw!r}"
    assert list(bad.value.invalid) == [InvalidParam("limit", reason)]


def test_parse_limit_defaults_to_the_most() -> None:
    assert parse_limit(None, 50) == 50
    assert parse_limit("1", 50) == 1
    assert parse_limit("50", 50) == 50


def test_a_query_time_that_leaves_the_calendar_in_utc_is_refused() -> None:
    # Python accepts year 1 at +01:00; in UTC it would be year 0, which does not exist.
    with pytest.raises(ValidationError) as bad:
        ReadingsQuery.model_validate({"tag": "press-1/t", "from": "0001-01-01T00:00:00+01:00"})
    (error,) = bad.value.errors()
    assert error["loc"] == ("from",)
    assert "'0001-01-01T00:00:00+01:00' is out of range once in UTC" in error["msg"]


def test_a_query_time_given_as_a_datetime_is_kept_as_it_is() -> None:
    # Only text is parsed as RFC 3339; a moment made in code is already one.
    moment = datetime(2026, 1, 31, 8, tzinfo=UTC)
    assert ReadingsQuery.model_validate({"tag": "press-1/t", "to": moment}).end == moment
