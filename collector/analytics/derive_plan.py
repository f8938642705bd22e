"""Which rollups one pass of the deriver redoes, from the writes logged since the last pass.

Each logged write names the tag versions it stored readings of and the span of their times.
Rollup minutes are redone once they have ended (the minute still running waits, so a reading
is rolled up once, not once per pass); what a write touched in the running minute stays
logged for the next pass. (Machines are redone from the earliest minute any of their tags was
written in, at every pass, so their state is current: collector/analytics/deriver.py.)
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from collector.analytics.timespans import MINUTE, floor_minute, joined


@dataclass(frozen=True, slots=True)
class LoggedWrite:
    """A row of derive_log."""

    id: int
    tag_ids: Sequence[int] | NDArray[np.int32]
    lo: datetime
    hi: datetime
    rollups: bool = True
    """Whether the deriver rolls it up from the readings (else a collector's parts bring it)."""


@dataclass(slots=True)
class Plan:
    """The work of one pass."""

    rollups: list[tuple[list[int], datetime, datetime]] = field(default_factory=list)
    """Tag ids and the ended, minute-aligned range [start, end) to roll up again."""
    pending: tuple[list[int], datetime, datetime] | None = None
    """What stays logged: tags written in the running minute (or later), and that span."""


def plan(writes: Sequence[LoggedWrite], running: datetime) -> Plan:
    """The pass's work, with `running` the start of the minute still running."""
    out = Plan()
    ranges: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    pending_ids: set[int] = set()
    pending_lo: datetime | None = None
    pending_hi: datetime | None = None
    for write in writes:
        start = floor_minute(write.lo)
        end = min(floor_minute(write.hi) + MINUTE, running)
        tags: list[int] = np.asarray(write.tag_ids).tolist() if write.rollups else []
        if write.rollups and start < end:
            for tag in tags:
                ranges[tag].append((start, end))
        if write.rollups and write.hi >= running:
            pending_ids.update(tags)
            lo = max(write.lo, running)
            pending_lo = lo if pending_lo is None else min(pending_lo, lo)
            pending_hi = write.hi if pending_hi is None else max(pending_hi, write.hi)
    by_range: dict[tuple[datetime, datetime], list[int]] = defaultdict(list)
    for tag, spans in ranges.items():
        for span in joined(spans):
            by_range[span].append(tag)
    out.rollups = [(sorted(tags), start, end) for (start, end), tags in sorted(by_range.items())]
    if pending_lo is not None and pending_hi is not None:
        out.pending = (sorted(pending_ids), pending_lo, pending_hi)
    return out
