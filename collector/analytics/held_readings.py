"""Readings of written batches held in memory until their minutes end, to be summarised.

The collector that stores a batch keeps its numeric readings here once the write has
committed (a claim in `rollup_claims`, written with the batch, stands for them). Once every
minute a batch touches has ended, its readings are taken out to be summarised per tag and
minute (collector/analytics/rollup_writer.py), once the agent's batches before it are in too
(they arrive out of order, several in flight). Batches held longer than `max_hold_s` (stamped
in the future, say), and all of them when more than `max_readings` are held, are taken out
even so: a summary of an unfinished minute merges with the rest of that minute later.
Memory stays bounded: beyond four times `max_readings` (nothing can be rolled up while the
database is away), the oldest batches are let go of, and their claims have the deriver roll
them up from the stored readings.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from collector.analytics.minute_summaries import MINUTE_US, Columns, usable
from collector.batches import Batch
from shared.blocks import ValueKind

log = logging.getLogger(__name__)

BatchKey = tuple[str, int, int]
"""(agent, epoch, batch id): a batch, and its row in rollup_claims."""
MAX_READINGS = 2_000_000
"""Most readings held before all are taken out (about 30 bytes each)."""
MAX_HOLD_S = 120.0
GAP_S = 30.0
"""How long a skipped batch id of an agent may stay missing before its batches count as
reaching other collectors too."""
SHARED_FOR_S = 600.0
"""How long an agent whose batches reach other collectors too is left to the deriver."""
PAUSE_SPACINGS = 4
QUIET_LEAST_S = 0.01
"""A pause is at least this long, and as long as PAUSE_SPACINGS of the batches' spacing."""
MAX_GAPS = 1000
"""Most gaps remembered per agent."""
DROP_FACTOR = 4
LOG_EVERY = 1000
"""Batches let go of between two warnings."""
"""Beyond this many times max_readings held, the oldest batches are let go of."""


def numeric_columns(batch: Batch, tag_ids: NDArray[np.int32]) -> Columns:
    """The batch's readings of numeric tag versions (`tag_ids` by tag index), as stored."""
    numeric = ~batch.tags.is_string[batch.t]
    value = np.where(batch.kinds == ValueKind.NUMBER, batch.values, np.nan)
    text_at = np.flatnonzero(batch.kinds == ValueKind.TEXT)
    for at, text in zip(text_at.tolist(), batch.texts, strict=True):
        if numeric[at]:  # a 64-bit integer too wide for a double travels as text
            value[at] = float(text)
    return Columns(
        tag_ids[batch.t][numeric],
        batch.ts[numeric],
        batch.seqs[numeric],
        (batch.qualities == 0)[numeric],
        usable(value[numeric]),
    )


@dataclass(slots=True)
class _Sequence:
    """An agent's batches as this collector gets them."""

    epoch: int
    next: int
    """The sequence number the batch after the latest one starts with."""
    gaps: list[tuple[int, int, float]]
    """Sequence numbers [start, end) skipped so far, and when they were first missed (oldest
    first)."""
    shared_until: float


@dataclass(frozen=True, slots=True)
class _Held:
    claim: BatchKey
    columns: Columns
    last_minute_end: int
    held_at: float


@dataclass(frozen=True, slots=True)
class Taken:
    """Batches taken out together: their readings and claims."""

    held: Sequence[_Held]
    """The batches, as held (at least one)."""

    @property
    def claims(self) -> list[BatchKey]:
        """The claims of the batches."""
        return [h.claim for h in self.held]

    @property
    def readings(self) -> int:
        """How many readings the batches hold."""
        return sum(len(h.columns) for h in self.held)

    def lanes(self, count: int, most: int) -> list["Taken"]:
        """The batches in up to `count` groups of whole agents, about even in readings, to be
        written side by side; all in one when they hold at most `most` readings."""
        if count <= 1 or self.readings <= most:
            return [self]
        readings: dict[str, int] = {}
        for held in self.held:
            readings[held.claim[0]] = readings.get(held.claim[0], 0) + len(held.columns)
        loads = [0] * count
        lane_of: dict[str, int] = {}
        for agent in sorted(readings, key=lambda a: -readings[a]):  # largest first
            lane = loads.index(min(loads))
            lane_of[agent] = lane
            loads[lane] += readings[agent]
        groups: list[list[_Held]] = [[] for _ in range(count)]
        for held in self.held:
            groups[lane_of[held.claim[0]]].append(held)
        return [Taken(group) for group in groups if group]

    def parts(self, most: int) -> list[list[Columns]]:
        """The batches' readings in parts of about `most` readings, an agent's all in one part
        (its tag versions are its own, so no tag version's minute spans two parts)."""
        by_agent: dict[str, list[Columns]] = {}
        for held in self.held:
            by_agent.setdefault(held.claim[0], []).append(held.columns)
        out: list[list[Columns]] = []
        size = 0
        for columns in by_agent.values():
            readings = sum(len(c) for c in columns)
            if not out or size + readings > most:
                out.append([])
                size = 0
            out[-1] += columns
            size += readings
        return out


class HeldReadings:
    """Written batches' readings waiting for their minutes to end."""

    def __init__(
        self,
        max_readings: int = MAX_READINGS,
        max_hold_s: float = MAX_HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_readings = max_readings
        self._max_hold_s = max_hold_s
        self._clock = clock
        self._held: list[_Held] = []
        self.readings = 0
        self._waiters: list[asyncio.Future[bool]] = []
        self.let_go = 0
        """Batches let go of to bound memory (their claims roll them up from the readings)."""
        self._seen: dict[str, _Sequence] = {}
        self._writing: dict[BatchKey, float] = {}
        """Batches being written to be held, and since when (until added or forgotten)."""
        self._last_added: float | None = None
        self._spacing: float | None = None
        """The recent time between two batches added (a moving average), seconds."""

    def holds(self, agent: str, epoch: int, first_seq: int, last_seq: int) -> bool:
        """Whether to hold this batch's readings: not while the agent's batches also reach
        other collectors (several in one shared subscription). Their summaries of a minute
        would interleave and never merge, so the deriver rolls those batches up instead.

        An agent's batches follow each other without gaps (a batch's id is the sequence
        number of its first reading, the next one starts after its last), so sequence
        numbers this collector still has not got after GAP_S went to another collector.
        """
        now = self._clock()
        seen = self._seen.get(agent)
        if seen is None or seen.epoch != epoch:
            shared_until = seen.shared_until if seen is not None else 0.0
            seen = self._seen[agent] = _Sequence(epoch, last_seq + 1, [], shared_until)
        elif first_seq >= seen.next:
            if first_seq > seen.next:
                seen.gaps.append((seen.next, first_seq, now))
                del seen.gaps[:-MAX_GAPS]
            seen.next = last_seq + 1
        else:  # filling a gap (or sent again)
            seen.gaps = [
                part
                for start, end, since in seen.gaps
                for part in (
                    (start, min(end, first_seq), since),
                    (max(start, last_seq + 1), end, since),
                )
                if part[0] < part[1]
            ]
        if seen.gaps and seen.gaps[0][2] <= now - GAP_S:
            seen.gaps.clear()
            seen.shared_until = now + SHARED_FOR_S
            log.info(
                "agent %s: its batches also reach other collectors; the deriver rolls them up",
                agent,
            )
        if seen.shared_until > now:
            return False
        self._writing[(agent, epoch, first_seq)] = now
        return True

    async def added_within(self, seconds: float) -> bool:
        """Whether a batch is added within `seconds` from now (a writer sees from it whether
        batches keep coming)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        # A timer settles it rather than a cancelled wait: the same, and coverage on Python
        # 3.11 stops tracing a frame that catches the cancellation of what it awaited.
        timer = loop.call_later(seconds, _settle, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def quiet(self, longest: float) -> float:
        """How long no batch must come for the batches to count as paused: several times their
        recent spacing (a burst's batches come milliseconds apart), at most `longest`."""
        if self._spacing is None:
            return longest
        return min(longest, max(QUIET_LEAST_S, PAUSE_SPACINGS * self._spacing))

    @property
    def writing(self) -> bool:
        """Whether batches `holds` answered for are still being written."""
        return bool(self._writing)

    def forget(self, claim: BatchKey) -> None:
        """A batch `holds` answered for was not written after all (stored before)."""
        self._writing.pop(claim, None)

    def add(self, claim: BatchKey, columns: Columns) -> None:
        """Hold a committed batch's readings (those of numeric tag versions)."""
        self._writing.pop(claim, None)
        end = (int(columns.ts.max()) // MINUTE_US + 1) * MINUTE_US if len(columns) else 0
        now = self._clock()
        if self._last_added is not None:
            gap = now - self._last_added
            self._spacing = gap if self._spacing is None else 0.8 * self._spacing + 0.2 * gap
        self._last_added = now
        self._held.append(_Held(claim, columns, end, now))
        self.readings += len(columns)
        for waiter in self._waiters:
            _settle(waiter, True)
        self._waiters.clear()
        while self.readings > DROP_FACTOR * self._max_readings:
            # Rolling up cannot keep up (the database is away or slow): let go of the oldest;
            # their claims stay, and the deriver rolls them up from the stored readings.
            dropped = self._held.pop(0)
            self.readings -= len(dropped.columns)
            if not self.let_go % LOG_EVERY:
                log.warning(
                    "holding over %d readings to roll up: letting go of the oldest batches"
                    " (%d so far); the deriver rolls them up from the stored readings",
                    DROP_FACTOR * self._max_readings,
                    self.let_go + 1,
                )
            self.let_go += 1

    def take(self, now_us: int, everything: bool = False) -> Taken | None:
        """Take out the batches whose minutes have all ended by `now_us` (all, if asked or
        too many are held), or None."""
        everything = everything or self.readings > self._max_readings
        oldest = self._clock() - self._max_hold_s
        # An agent's batches after one not held yet (not got, or still being written) wait
        # for it: their summaries would span its readings, and the minutes be redone.
        missing = self._first_missing()
        ready: list[_Held] = []
        kept: list[_Held] = []
        for held in self._held:
            agent, epoch, first = held.claim
            behind = missing.get(agent, (None, first))
            waits = behind[0] == epoch and behind[1] < first
            due = (held.last_minute_end <= now_us and not waits) or held.held_at <= oldest
            (ready if everything or due else kept).append(held)
        if not ready:
            return None
        self._held = kept
        taken = Taken(ready)
        self.readings -= taken.readings
        return taken

    def _first_missing(self) -> dict[str, tuple[int, int]]:
        """Per agent: its epoch and the first sequence number not held yet, if any."""
        recent = self._clock() - GAP_S  # nor a gap nor a write that failed, forever
        out = {
            agent: (seen.epoch, seen.gaps[0][0])
            for agent, seen in self._seen.items()
            if seen.gaps and seen.gaps[0][2] > recent
        }
        for (agent, epoch, first), since in list(self._writing.items()):
            if since < recent:
                del self._writing[(agent, epoch, first)]
            elif agent not in out or out[agent] > (epoch, first):
                out[agent] = (epoch, first)
        return out

    def give_back(self, taken: Taken) -> None:
        """Hold again what could not be written, to be taken out again."""
        self._held[:0] = taken.held
        self.readings += taken.readings


def _settle(waiter: "asyncio.Future[bool]", added: bool) -> None:
    if not waiter.done():
        waiter.set_result(added)
