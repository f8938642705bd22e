"""Binary COPY rows read back field by field: nulls where a reading has no value or server time."""

import struct

import numpy as np

from collector.batches import BatchDecoder
from collector.copy_rows import COLUMNS, encode_rows, int4_array, int4_values
from shared.readings import DataType, Quality, Reading
from shared.wire import encode_batch

TS = 1_790_000_000_000_000
PG_EPOCH_US = 946_684_800_000_000


def parse(rows: bytes) -> dict[int, dict[str, bytes | None]]:
    """Each row's fields by column name (None: null), keyed by its sequence number."""
    out: dict[int, dict[str, bytes | None]] = {}
    at = 0
    while at < len(rows):
        (count,) = struct.unpack_from(">h", rows, at)
        assert count == len(COLUMNS)
        at += 2
        fields: dict[str, bytes | None] = {}
        for name in COLUMNS:
            (length,) = struct.unpack_from(">i", rows, at)
            at += 4
            fields[name] = None if length == -1 else rows[at : at + length]
            at += max(length, 0)
        seq = fields["seq"]
        assert seq is not None
        out[struct.unpack(">q", seq)[0]] = fields
    return out


def test_a_reading_without_a_value_is_a_row_of_nulls_for_value_and_server_time() -> None:
    readings = [
        Reading("press", "temp", DataType.FLOAT32, TS, None, Quality.BAD),
        Reading("press", "temp", DataType.FLOAT32, TS + 1, None, Quality.BAD, TS + 5),
        Reading("press", "temp", DataType.FLOAT32, TS + 2, 65.5, Quality.GOOD, TS + 6),
        Reading("press", "temp", DataType.FLOAT32, TS + 3, 66.0),
    ]
    batch = BatchDecoder().decode(
        encode_batch("a1", 1, [1, 2, 3, 4], readings), "a1", "plantwire/v1/a1/batch"
    )
    rows = parse(encode_rows(batch, np.array([17], np.int32)))
    assert sorted(rows) == [1, 2, 3, 4]

    def ts(us: int) -> bytes:
        return struct.pack(">q", us - PG_EPOCH_US)

    assert (rows[1]["value"], rows[1]["server_ts"]) == (None, None)
    assert rows[1]["quality"] == struct.pack(">h", Quality.BAD)
    assert (rows[2]["value"], rows[2]["server_ts"]) == (None, ts(TS + 5))
    assert (rows[3]["value"], rows[3]["server_ts"]) == (struct.pack(">d", 65.5), ts(TS + 6))
    assert (rows[4]["value"], rows[4]["server_ts"]) == (struct.pack(">d", 66.0), None)
    assert all(row["tag_id"] == struct.pack(">i", 17) for row in rows.values())
    assert all(row["value_text"] is None for row in rows.values())
    assert rows[4]["ts"] == ts(TS + 3)


def test_an_int4_array_in_binary_form_reads_back_as_its_elements() -> None:
    values = np.array([3, 70_000, 2_000_000_000], np.int32)
    assert int4_values(int4_array(values)).tolist() == [3, 70_000, 2_000_000_000]
    # PostgreSQL sends an empty array with no dimensions at all.
    assert int4_values(struct.pack(">iii", 0, 0, 23)).tolist() == []
