"""Opaque cursors for keyset pagination: a position (a time and a number) in a listing."""

import base64
import binascii
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
MAX_NUMBER = 2**63 - 1
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"
"""What a cursor looks like (URL-safe base64, unpadded)."""


def encode_cursor(moment: datetime, number: int) -> str:
    """A token for the position just after the row at (`moment`, `number`)."""
    micros = (moment - _EPOCH) // _MICROSECOND
    return base64.urlsafe_b64encode(f"{micros}:{number}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, int]:
    """The (moment, number) a cursor stands for; ValueError if it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        micros, number = (int(part) for part in text.split(":"))
        moment = _EPOCH + micros * _MICROSECOND
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise ValueError("not a cursor from a previous page's `next`") from None
    if not 0 < number <= MAX_NUMBER:
        raise ValueError("not a cursor from a previous page's `next`")
    return moment, number


def encode_key_cursor(key: str) -> str:
    """A token for the position just after the row with this text key."""
    return base64.urlsafe_b64encode(f"k:{key}".encode()).decode().rstrip("=")


def decode_key_cursor(token: str) -> str:
    """The text key a key cursor stands for; ValueError if it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor from a previous page's `next`") from None
    if not text.startswith("k:") or "\x00" in text:
        raise ValueError("not a cursor from a previous page's `next`")
    return text[2:]
