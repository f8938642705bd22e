"""Checks of what the code's own logic guarantees, kept under `python -O` (unlike `assert`)."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class InvariantError(RuntimeError):
    """Something the program's own logic guarantees did not hold: a bug, never bad input."""


def required(value: T | None, what: str) -> T:
    """The value, which the caller's logic guarantees is there; InvariantError naming it if not."""
    if value is None:
        raise InvariantError(f"{what} is missing")
    return value
