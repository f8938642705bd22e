"""Cursors that are not ours are refused with one message, whatever is wrong with them."""

import base64
from datetime import UTC, datetime

import pytest

from collector.pagination import (
    MAX_NUMBER,
    decode_cursor,
    decode_key_cursor,
    encode_cursor,
    encode_key_cursor,
)

NOT_OURS = "not a cursor from a previous page's `next`"


def token(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def test_a_cursor_round_trips_up_to_the_largest_number() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(moment, MAX_NUMBER)) == (moment, MAX_NUMBER)


@pytest.mark.parametrize(
    "raw",
    [
        token(b"1772366400000000:0"),  # ids start at 1
        token(b"1772366400000000:-5"),
        token(f"1772366400000000:{MAX_NUMBER + 1}".encode()),  # past bigint
        token(b"1772366400000000"),  # no number
        token(b"99999999999999999999:1"),  # a time past year 9999
        "a",  # not base64
    ],
)
def test_a_cursor_no_listing_can_have_made_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=NOT_OURS):
        decode_cursor(raw)


def test_a_key_cursor_round_trips() -> None:
    assert decode_key_cursor(encode_key_cursor("press-1")) == "press-1"


@pytest.mark.parametrize(
    "raw",
    [
        "a",  # one base64 character cannot be decoded
        token(b"k:\xff\xfe"),  # not UTF-8
        token(b"press-1"),  # no key prefix
        token(b"k:press\x00"),  # a NUL, which no key holds
    ],
)
def test_a_key_cursor_not_made_here_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=NOT_OURS):
        decode_key_cursor(raw)
