"""Time spans: moments floored to a grain of UTC, and spans joined where they meet."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Span = tuple[datetime, datetime]


def floor_to(moment: datetime, grain: timedelta) -> datetime:
    """The start of the minute, hour (`grain`) of UTC that `moment` lies in."""
    return moment - (moment - _EPOCH) % grain


def floor_minute(moment: datetime) -> datetime:
    """The start of the minute `moment` lies in."""
    return floor_to(moment, MINUTE)


def on_grain(moment: datetime, grain: timedelta) -> bool:
    """Whether `moment` is a whole minute or hour (`grain`) of UTC."""
    return not (moment - _EPOCH) % grain


def joined(spans: Iterable[Span]) -> list[Span]:
    """The spans sorted, with overlapping or touching ones joined."""
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
