"""What every paginated listing shares: its cursor parameter and its next link."""

from datetime import datetime

from aiohttp import web

from collector.api.problems import bad_param
from collector.pagination import decode_cursor, encode_cursor


def position(cursor: str | None) -> tuple[datetime, int] | None:
    """Where the previous page ended, from its cursor; a 400 naming `cursor` if it is not one."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except ValueError as exc:
        raise bad_param("cursor", str(exc)) from None


def next_link(request: web.Request, last: tuple[datetime, int] | None, **keep: str) -> str | None:
    """The URL of the page after the row at `last` (None: no more pages).

    It keeps every parameter of this request (and `keep`), so following it needs nothing else.
    """
    if last is None:
        return None
    url = request.rel_url.update_query(keep) if keep else request.rel_url
    return str(url.update_query(cursor=encode_cursor(*last)))
