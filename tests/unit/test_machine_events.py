"""The stream events a deriver pass makes for machines whose current state changed."""

from datetime import UTC, datetime

from collector.analytics.machine_events import STATE, Latest, state_events

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 6, 5, tzinfo=UTC)


def test_only_machines_whose_latest_span_is_new_or_changed_make_an_event() -> None:
    before: Latest = {
        ("p", "same"): (T0, 1, None, "A"),
        ("p", "moved"): (T0, 1, None, "A"),
        ("p", "gone"): (T0, 1, None, None),
    }
    after: Latest = {
        ("p", "same"): (T0, 1, None, "A"),  # derived again, unchanged
        ("p", "moved"): (T1, 3, 7, "A"),  # down, reason 7
        ("p", "new"): (T1, "run", None, None),  # its first state
    }
    events = state_events(before, after)
    assert [(e.kind, e.subject, e.role) for e in events] == [
        (STATE, "p/moved", "viewer"),
        (STATE, "p/new", "viewer"),
    ]
    assert events[0].body == {
        "site": "p",
        "machine": "moved",
        "state": 3,
        "reason": 7,
        "product": "A",
        "since": "2026-03-02T06:05:00+00:00",
    }
