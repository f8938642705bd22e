"""What every paginated listing shares: its cursor parameter and its next link."""

from datetime import datetime

from aiohttp import web

from collector.api.problems import bad_param
from collector.pagination import (
    decode_cursor,
    decode_key_cursor,
    encode_cursor,
    encode_key_cursor,
)


def position(cursor: str | None) -> tuple[datetime, int] | None:
    """Where the previous page ended, from its cursor; a 400 naming `cursor` if it is not one."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except ValueError as exc:
        raise bad_param("cursor", str(exc)) from None


def key_position(cursor: str | None) -> str | None:
    """The text key the previous page ended at; a 400 naming `cursor` if it is not a cursor."""
    if cursor is None:
        return None
    try:
        return decode_key_cursor(cursor)
    except ValueError as exc:
        raise bad_param("cursor", str(exc)) from None


def next_link(
    request: web.Request, last: tuple[datetime, int] | str | None, **keep: str
) -> str | None:
    """The URL of the page after the row at `last` (None: no more pages).

    It keeps every parameter of this request (and `keep`), so following it needs nothing else.
    """
    if last is None:
        return None
    url = request.rel_url.update_query(keep) if keep else request.rel_url
    token = encode_key_cursor(last) if isinstance(last, str) else encode_cursor(*last)
    return str(url.update_query(cursor=token))
