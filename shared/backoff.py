"""Exponential backoff with full jitter and a cap, for reconnecting to devices and brokers."""

import random

# One generator for all: seeding a new one reads the OS's entropy, a system call per backoff.
_RANDOM = random.Random()  # noqa: S311 - spreads retry times, nothing secret


class Backoff:
    """Delays that double from `initial` up to `cap`, each drawn uniformly below the bound."""

    def __init__(self, initial: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        self._initial = initial
        self._cap = cap
        self._attempt = 0
        self._random = rng or _RANDOM

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        bound = min(self._cap, self._initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return self._random.uniform(bound / 2, bound)

    def reset(self) -> None:
        """Start again from the initial delay after a success."""
        self._attempt = 0
