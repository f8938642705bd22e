"""Stream events for the machines whose current state a deriver pass changed."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from collector.analytics.machine_store import MachineKey
from collector.events import Event

STATE = "machine.state"
"""The kind of the event a machine's new current state makes."""

Latest = dict[MachineKey, tuple[datetime, Any, Any, str | None]]
"""Per machine: its latest span's start, state, reason and product."""

_LATEST = """
SELECT u.site, u.machine, s.start_ts, s.state, s.reason, s.product
FROM unnest(%s::text[], %s::text[]) AS u (site, machine)
CROSS JOIN LATERAL (
    SELECT start_ts, state, reason, product FROM machine_intervals
    WHERE site = u.site AND machine = u.machine ORDER BY start_ts DESC LIMIT 1
) AS s
"""


async def latest_spans(conn: AsyncConnection[TupleRow], keys: Sequence[MachineKey]) -> Latest:
    """Each machine's latest span (what it is doing now), where it has one."""
    params = [[site for site, _ in keys], [machine for _, machine in keys]]
    rows = await (await conn.execute(_LATEST, params)).fetchall()
    return {(row[0], row[1]): (row[2], row[3], row[4], row[5]) for row in rows}


def state_events(before: Latest, after: Latest) -> list[Event]:
    """A machine.state event for each machine whose latest span is new or not as it was."""
    out = []
    for (site, machine), latest in after.items():
        if before.get((site, machine)) == latest:
            continue
        since, state, reason, product = latest
        body = {
            "site": site,
            "machine": machine,
            "state": state,
            "reason": reason,
            "product": product,
            "since": since.isoformat(),
        }
        out.append(Event(kind=STATE, subject=f"{site}/{machine}", role="viewer", body=body))
    return out
