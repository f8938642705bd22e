"""The buffer file's tables, and converting a file of the previous layout in place.

Layout 1 kept one row per reading; layout 2 keeps one row per poll block. A layout 1 file
(what agents before wire version 3 wrote) is converted when it is opened, in the same
transaction as the open: its readings keep their sequence numbers, and each batch already
cut keeps its range, so the collector still stores each batch exactly once.
"""

import logging
import math
import sqlite3
from pathlib import Path

from shared.blocks import encode_block
from shared.readings import DataType, Quality, Reading

log = logging.getLogger(__name__)
LAYOUT_VERSION = 2


def create_layout(conn: sqlite3.Connection, *, epoch: int) -> None:
    """Create the tables of a new, empty buffer file (inside the caller's transaction)."""
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    # A tag dictionary keeps each block to numbers; a tag's index in batches is its id - 1.
    conn.execute(
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, device TEXT NOT NULL,"
        " tag TEXT NOT NULL, type TEXT NOT NULL, UNIQUE (device, tag, type))"
    )
    _create_blocks_and_batches(conn)
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("schema_version", LAYOUT_VERSION),
            ("epoch", epoch),
            ("next_seq", 1),
            ("dropped_oldest", 0),
            ("dropped_newest", 0),
        ],
    )


def _create_blocks_and_batches(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE blocks (first_seq INTEGER PRIMARY KEY, n INTEGER NOT NULL,"
        " ts INTEGER NOT NULL, flags INTEGER NOT NULL, body BLOB NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS batches"
        " (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL)"
    )


def upgrade_layout(conn: sqlite3.Connection, path: Path, block_max: int) -> None:
    """Convert a layout 1 file to layout 2 (inside the caller's transaction); else nothing."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    if row is None or row[0] != 1 or not {"readings", "tags", "batches"} <= tables:
        return  # the caller refuses anything but the current layout, naming what it found
    tags = {
        tag_id: (device, tag, DataType(type_name))
        for tag_id, device, tag, type_name in conn.execute("SELECT id, device, tag, type FROM tags")
    }
    if sorted(tags) != list(range(1, len(tags) + 1)):
        return
    batches = conn.execute("SELECT first_seq, last_seq FROM batches").fetchall()
    bounds = {first for first, _ in batches} | {last + 1 for _, last in batches}
    high = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
    _create_blocks_and_batches(conn)
    run: list[tuple[int, Reading]] = []
    blocks = readings = 0

    def flush() -> None:
        nonlocal blocks
        if run:
            block = encode_block(run[0][0], [r for _, r in run], lambda r: index[_key(r)])
            conn.execute(
                "INSERT INTO blocks (first_seq, n, ts, flags, body) VALUES (?,?,?,?,?)",
                (block.first_seq, block.n, block.ts, int(block.flags), block.body),
            )
            blocks += 1
            run.clear()

    index = {key: tag_id - 1 for tag_id, key in tags.items()}
    for seq, tag_id, ts, value, quality, server_ts in conn.execute(
        "SELECT seq, tag_id, ts, value, quality, server_ts FROM readings ORDER BY seq"
    ):
        # A block needs consecutive sequence numbers, and a batch whole blocks.
        if run and (seq != run[-1][0] + 1 or seq in bounds or len(run) >= block_max):
            flush()
        device, tag, data_type = tags[tag_id]
        restored = _restore(data_type, value)
        run.append(
            (seq, Reading(device, tag, data_type, ts, restored, Quality(quality), server_ts))
        )
        readings += 1
    flush()
    next_seq = (high[0] if high else 0) + 1
    conn.execute("DROP TABLE readings")
    conn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [("schema_version", LAYOUT_VERSION), ("next_seq", next_seq)],
    )
    log.info(
        "buffer %s converted from layout 1 to %d: %d readings kept, in %d blocks",
        path,
        LAYOUT_VERSION,
        readings,
        blocks,
    )


def _key(reading: Reading) -> tuple[str, str, DataType]:
    return (reading.device, reading.tag, reading.data_type)


def _restore(data_type: DataType, value: object) -> bool | int | float | str | None:
    """A layout 1 value as its tag's Python type (NaN and huge integers were kept as text)."""
    if value is None:
        return None
    if data_type is DataType.BOOL:
        return bool(value)
    if data_type in (DataType.FLOAT32, DataType.FLOAT64):
        return math.nan if value == "NaN" else float(value)  # type: ignore[arg-type]
    if data_type is not DataType.STRING and isinstance(value, str):
        return int(value)
    return value  # type: ignore[return-value]
