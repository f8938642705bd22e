"""What a write logs for the deriver and the alert evaluator: a row per agent and run of batches."""

from typing import Any

import numpy as np

from collector.config import IngestSettings
from collector.consumer import batch_decoder
from collector.store import JOIN_US, _log_rows, _touched
from shared.readings import DataType, Quality, Reading
from shared.wire import Topics, encode_batch

DECODER = batch_decoder(IngestSettings())
T0_US = 1_790_000_000_000_000


def batch(agent: str, first: int, seconds: list[float], tags: tuple[str, ...] = ("a", "b")) -> Any:
    """A batch of `agent` with a reading of each tag at each of these seconds after T0."""
    readings = [
        Reading("press", tag, DataType.FLOAT64, T0_US + int(s * 1e6), 1.0, Quality.GOOD)
        for s in seconds
        for tag in tags
    ]
    seqs = list(range(first, first + len(readings)))
    return DECODER.decode(encode_batch(agent, 1, seqs, readings), agent, Topics().batch(agent))


def test_adjacent_batches_of_one_agent_and_the_same_tags_are_one_row() -> None:
    batches = [
        batch("a1", 1, [0, 1]),
        batch("a2", 1, [0]),
        batch("a1", 5, [2, 3]),  # right after a1's first: joined
        batch("a1", 9, [3 + JOIN_US / 1e6 + 1]),  # over a minute later: a row of its own
        batch("a1", 11, [400], tags=("a",)),  # other tags
        batch("a1", 12, [401]),  # not claimed: another flag
    ]
    ids = {(b.agent, b.tags.raw): np.arange(len(b.tags.refs), dtype=np.int32) for b in batches}
    touched = [_touched(b, ids) for b in batches]
    flags = [True, True, True, True, True, False]
    rows = [
        (row[0].tolist(), (row[1] - T0_US) / 1e6, (row[2] - T0_US) / 1e6, flag)
        for row, flag in _log_rows(batches, touched, flags)
    ]
    assert rows == [
        ([0, 1], 0, 3, True),
        ([0, 1], 64, 64, True),
        ([0], 400, 400, True),
        ([0, 1], 0, 0, True),  # a2's
        ([0, 1], 401, 401, False),
    ]
