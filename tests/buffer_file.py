"""Reading an agent's buffer file from outside the agent, as tests check what it holds."""

import contextlib
import sqlite3
from pathlib import Path


def _connect(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10))


def held_seqs(path: Path) -> list[int]:
    """Sequence numbers of the readings the buffer holds, in order."""
    with _connect(path) as conn:
        rows = conn.execute("SELECT first_seq, n FROM blocks ORDER BY first_seq").fetchall()
    return [seq for first, n in rows for seq in range(first, first + n)]


def last_seq(path: Path) -> int:
    """The last sequence number the buffer ever gave out (0 for none)."""
    with _connect(path) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    return int(row[0]) - 1 if row else 0


def held_count(path: Path) -> int:
    """How many readings the buffer holds."""
    with _connect(path) as conn:
        return int(conn.execute("SELECT coalesce(sum(n), 0) FROM blocks").fetchone()[0])
