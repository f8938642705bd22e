"""Converting a layout 1 buffer file: the odd files, and files that cannot be converted."""

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.buffer import BufferLayoutError, SqliteBuffer

TS = 1_790_000_000_000_000

LAYOUT_1 = """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, tag_id INTEGER NOT NULL,
        ts INTEGER NOT NULL, value, quality INTEGER NOT NULL, server_ts INTEGER);
    CREATE TABLE tags (id INTEGER PRIMARY KEY, device TEXT NOT NULL, tag TEXT NOT NULL,
        type TEXT NOT NULL, UNIQUE (device, tag, type));
    CREATE TABLE batches (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL);
    INSERT INTO meta VALUES ('schema_version', 1), ('epoch', 42),
        ('dropped_oldest', 0), ('dropped_newest', 0);
"""


def write_layout_1(
    path: Path, tags: Sequence[tuple[int, str, str]], rows: Sequence[tuple[int, object]]
) -> None:
    """A layout 1 file with these (id, tag, type) tags and (tag id, value) readings."""
    with sqlite3.connect(path) as conn:
        conn.executescript(LAYOUT_1)
        conn.executemany("INSERT INTO tags VALUES (?, 'd', ?, ?)", tags)
        conn.executemany(
            "INSERT INTO readings (tag_id, ts, value, quality) VALUES (?, ?, ?, 0)",
            [(tag_id, TS + i, value) for i, (tag_id, value) in enumerate(rows)],
        )


def layout_of(path: Path) -> tuple[int, set[str]]:
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    return version[0], tables


async def test_a_layout_1_file_with_a_gap_in_its_tag_ids_is_refused_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    write_layout_1(path, [(1, "a", "int32"), (3, "c", "int32")], [(1, 5), (3, 6)])
    buffer = SqliteBuffer(path)
    with pytest.raises(BufferLayoutError, match="has layout 1; this version reads layout 2"):
        await buffer.open()
    await buffer.close()
    version, tables = layout_of(path)
    assert version == 1
    assert "readings" in tables
    assert "blocks" not in tables


async def test_an_empty_layout_1_file_converts_to_an_empty_buffer(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    write_layout_1(path, [], [])
    buffer = SqliteBuffer(path)
    await buffer.open()
    assert buffer.epoch == 42
    assert (await buffer.stats()).readings == 0
    assert await buffer.begin(100) is None
    await buffer.close()
    version, tables = layout_of(path)
    assert version == 2
    assert "readings" not in tables


async def test_bool_readings_of_a_layout_1_file_come_back_as_bools(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    write_layout_1(path, [(1, "running", "bool")], [(1, 1), (1, 0)])
    buffer = SqliteBuffer(path)
    await buffer.open()
    batch = await buffer.begin(100)
    assert batch is not None
    values = [reading.value for reading in batch.readings]
    assert values == [True, False]
    assert all(isinstance(value, bool) for value in values)
    await buffer.close()


async def test_a_layout_1_file_that_cannot_be_converted_is_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    # Reading 2 names a tag the file does not have: the conversion fails half way.
    write_layout_1(path, [(1, "a", "int32")], [(1, 5), (9, 6)])
    buffer = SqliteBuffer(path)
    with pytest.raises(KeyError):
        await buffer.open()
    await buffer.close()
    version, tables = layout_of(path)
    assert version == 1, "the conversion's transaction was rolled back"
    assert "readings" in tables
    assert "blocks" not in tables
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 2
