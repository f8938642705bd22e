"""Parameter and field types every resource shares: timestamps, limits, identifiers."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, Field, WithJsonSchema

from collector.api.problems import bad_param
from shared.wire import AGENT_ID_PATTERN


def format_ts(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(name: str, raw: str | None, default: datetime) -> datetime:
    """An RFC 3339 timestamp with a time zone, or the default when absent (for the CLI)."""
    if raw is None:
        return default
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        reason = f"expected an RFC 3339 timestamp such as 2026-01-31T08:00:00Z, got {raw!r}"
        raise bad_param(name, reason) from None
    if moment.tzinfo is None:
        raise bad_param(name, "timestamp needs a time zone, e.g. a trailing Z for UTC")
    return moment


def parse_limit(raw: str | None, maximum: int) -> int:
    """A positive whole number no larger than `maximum` (for the CLI)."""
    if raw is None:
        return maximum
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise bad_param("limit", f"expected a whole number from 1 to {maximum}, got {raw!r}")
    return int(raw)


Timestamp = Annotated[
    datetime,
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""A moment in a response: RFC 3339 with a trailing Z (the database session is in UTC),
fractions of a second only when there are any."""


def _rfc3339(raw: object) -> object:
    """Only text is a timestamp here: pydantic would take a number as Unix seconds."""
    if not isinstance(raw, str):
        return raw
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"expected an RFC 3339 timestamp such as 2026-01-31T08:00:00Z, got {raw!r}"
        ) from None
    if moment.tzinfo is None:
        return moment  # AwareDatetime says what is missing
    try:
        # In UTC: PostgreSQL refuses offsets beyond 15:59 that Python accepts.
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{raw!r} is out of range once in UTC") from None


QueryTime = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    Field(
        description="RFC 3339 timestamp with a time zone, e.g. 2026-01-31T08:00:00Z.",
        examples=["2026-01-31T08:00:00Z"],
    ),
]
"""A moment in a request: the time zone is required."""

AgentName = Annotated[
    str, Field(pattern=AGENT_ID_PATTERN, description="Agent id.", examples=["line1"])
]


def _true_or_false(raw: object) -> object:
    if isinstance(raw, str) and raw not in ("true", "false"):
        raise ValueError(f"expected true or false, got {raw!r}")
    return raw == "true" if isinstance(raw, str) else raw


QueryBool = Annotated[bool, BeforeValidator(_true_or_false)]
"""A boolean in a query string: exactly true or false."""
