"""Which machines and which window an analytics request is about: shared by KPIs and downtime."""

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import Field

from collector.analytics.calendar import RelativeWindow, relative_window
from collector.analytics.equipment import ID_PATTERN, Site
from collector.analytics.reports import Scope
from collector.api.operations import Params
from collector.api.params import QueryTime
from collector.api.problems import InvalidParam, ProblemError
from collector.state import EQUIPMENT

MAX_DAYS = 400
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
"""Analytics windows lie within the years readings may have (as agents and ingest check)."""


def _ident(description: str) -> Any:
    return Field(default=None, pattern=ID_PATTERN, max_length=64, description=description)


class ScopeQuery(Params):
    """A site, optionally narrowed to an area, a line or a machine, and a window of time."""

    site: str = Field(pattern=ID_PATTERN, max_length=64, description="The site's id.")
    area: str | None = _ident("Only this area's machines.")
    line: str | None = _ident("Only this line's machines.")
    machine: str | None = _ident("Only this machine.")
    start: QueryTime | None = Field(
        default=None, alias="from", description="Start of the window (with `to`)."
    )
    end: QueryTime | None = Field(default=None, alias="to", description="End (excluded).")
    window: RelativeWindow | None = Field(
        default=None,
        description="A window named in the site's calendar instead of from/to: the shift"
        " running now, the one before it, today's or yesterday's production day.",
    )


def refuse(name: str, reason: str, status: int = 422) -> ProblemError:
    """A problem naming the parameter it is about."""
    title = "Unknown equipment" if status == 404 else "Unprocessable request parameter"
    return ProblemError(status, title, f"{name}: {reason}", [InvalidParam(name, reason)])


async def resolve(request: web.Request, query: ScopeQuery) -> Scope:
    """The site, its machines in scope and the window; 404 or 422 naming the parameter."""
    store = request.app[EQUIPMENT]
    stored = await store.site(query.site)
    if stored is None:
        raise refuse("site", f"no site {query.site}", 404)
    machines = [
        machine
        for machine in await store.machines(query.site)
        if (query.area is None or machine.machine.area == query.area)
        and (query.line is None or machine.machine.line == query.line)
        and (query.machine is None or machine.id == query.machine)
    ]
    if not machines:
        narrowest = next((n for n in ("machine", "line", "area") if getattr(query, n)), "site")
        raise refuse(narrowest, f"no machine of site {query.site} is in this scope", 404)
    now = datetime.now(UTC)
    start, end = _window(stored.site, query, now)
    return Scope(query.site, stored.site, machines, start, end, now)


def check_time(name: str, moment: datetime) -> None:
    """422 naming `name` unless EARLIEST <= moment <= LATEST."""
    if not EARLIEST <= moment <= LATEST:
        raise refuse(name, "must lie in the years 2000 to 2099")


def _window(site: Site, query: ScopeQuery, now: datetime) -> tuple[datetime, datetime]:
    if query.window is not None:
        if query.start is not None or query.end is not None:
            raise refuse("window", "give either `window` or `from` and `to`, not both")
        try:
            return relative_window(site, query.window, now)
        except LookupError as exc:
            raise refuse("window", str(exc)) from None
    if query.start is None or query.end is None:
        raise refuse("from" if query.start is None else "to", "give `from` and `to`, or `window`")
    if query.start >= query.end:
        raise refuse("from", "must be earlier than `to`")
    check_time("from", query.start)
    check_time("to", query.end)
    if query.end - query.start > timedelta(days=MAX_DAYS):
        raise refuse("to", f"the window is longer than {MAX_DAYS} days")
    return query.start, query.end
