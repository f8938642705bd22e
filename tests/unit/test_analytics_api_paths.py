"""Paths of the analytics API and readers that the integration tests do not pin down."""

from datetime import UTC, datetime
from typing import Any

from collector.analytics import histories
from collector.analytics.equipment import TimeElement, TpmLoss
from collector.analytics.losses import Reclassification, StopEvent
from collector.api.kpis import stop_out

T0 = datetime(2026, 3, 2, 7, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)


def test_a_reclassified_stop_shows_who_set_its_reason_and_when() -> None:
    again = Reclassification(4, "key 3f9a1c07", "shift lead", T1, "planned")
    event = StopEvent(
        T0,
        None,
        1800.0,
        3,
        "down",
        4,
        "Maintenance",
        TimeElement.PLANNED_DOWNTIME,
        None,
        False,
        again,
    )
    out = stop_out("press-1", event)
    assert out.ongoing
    assert out.iso_element == "PDOT"
    assert out.reclassified is not None
    assert (out.reclassified.by, out.reclassified.by_name, out.reclassified.at) == (
        "key 3f9a1c07",
        "shift lead",
        T1,
    )
    plain = stop_out(
        "press-1",
        StopEvent(
            T0, T1, 1800.0, 3, "down", 5, None, TimeElement.DELAY, TpmLoss.BREAKDOWN, False, None
        ),
    )
    assert plain.reclassified is None
    assert not plain.ongoing


class _Cursor:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    async def fetchall(self) -> list[Any]:
        return self._rows


class _Conn:
    """Answers the look-back query from a list of spans, newest first."""

    def __init__(self, spans: list[Any]) -> None:
        self.spans = spans

    async def execute(self, query: str, params: Any) -> _Cursor:
        _, _, at, limit = params
        if "DESC" in query:
            return _Cursor(sorted([s for s in self.spans if s[0] < at], reverse=True)[:limit])
        return _Cursor(sorted([s for s in self.spans if s[0] >= at])[:limit])


async def test_looking_back_stops_at_the_machine_s_first_span() -> None:
    first = (T0, T1, 3, 5, "A")
    rest = (T1, None, 3, 6, "A")
    found = await histories._same_stop(_Conn([first]), "s", "m", rest, later=False)  # type: ignore[arg-type]
    assert found == [first]


async def test_following_a_stop_ends_at_the_machine_s_last_span() -> None:
    first = (T0, T1, 3, 5, "A")
    rest = (T1, None, 3, 6, "A")
    found = await histories._same_stop(_Conn([rest]), "s", "m", first, later=True)  # type: ignore[arg-type]
    assert found == [rest]
