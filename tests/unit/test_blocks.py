"""Poll blocks: one poll's readings as columns, encoded once and read back exactly."""

import math

from shared.blocks import (
    SPLIT_RUNS_UP_TO,
    BlockFlags,
    decode_block,
    encode_block,
    timestamp_runs,
)
from shared.readings import DataType, Quality, Reading

TS = 1_790_000_000_000_000
TAGS = [
    ("d", "f", DataType.FLOAT64),
    ("d", "big", DataType.UINT64),
    ("d", "on", DataType.BOOL),
    ("d", "s", DataType.STRING),
    ("d", "i", DataType.INT16),
]
INDEX = {tag: i for i, tag in enumerate(TAGS)}


def index(reading: Reading) -> int:
    return INDEX[(reading.device, reading.tag, reading.data_type)]


def test_a_poll_of_one_instant_carries_one_timestamp_and_reads_back_exactly() -> None:
    poll = [
        Reading("d", "f", DataType.FLOAT64, TS, math.inf),
        Reading("d", "big", DataType.UINT64, TS, 2**64 - 1),
        Reading("d", "on", DataType.BOOL, TS, True),
        Reading("d", "s", DataType.STRING, TS, "héllo\n"),
        Reading("d", "i", DataType.INT16, TS, None, Quality.BAD),
        Reading("d", "i", DataType.INT16, TS, -(2**15)),
    ]
    block = encode_block(7, poll, index)
    assert (block.first_seq, block.last_seq, block.n, block.ts) == (7, 12, 6, TS)
    assert block.flags == BlockFlags.TEXTS, "texts, but no per-reading timestamps"
    assert len(block.body) == 6 * 14 + len(b'["18446744073709551615","h\\u00e9llo\\n"]')
    assert decode_block(block, TAGS) == poll
    assert block.texts() == [str(2**64 - 1), "héllo\n"]


def test_per_reading_and_server_timestamps_are_columns_only_when_needed() -> None:
    poll = [
        Reading("d", "f", DataType.FLOAT64, TS + i, float(i), Quality.UNCERTAIN, TS + 10 + i)
        for i in range(3)
    ]
    poll.append(Reading("d", "f", DataType.FLOAT64, TS, math.nan))
    block = encode_block(1, poll, index)
    assert block.flags == BlockFlags.RTS | BlockFlags.STS
    back = decode_block(block, TAGS)
    assert back[:3] == poll[:3]
    assert math.isnan(float(back[3].value))  # type: ignore[arg-type]
    assert back[3].server_ts_us is None, "no server timestamp stays none"


def test_a_poll_of_a_few_requests_splits_into_runs_but_scattered_times_stay_whole() -> None:
    requests = [Reading("d", "f", DataType.FLOAT64, TS + i // 50, 1.0) for i in range(150)]
    assert [len(run) for run in timestamp_runs(requests)] == [50, 50, 50]
    scattered = [Reading("d", "f", DataType.FLOAT64, TS + i, 1.0) for i in range(100)]
    assert SPLIT_RUNS_UP_TO < 100
    assert [len(run) for run in timestamp_runs(scattered)] == [100]
