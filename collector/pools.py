"""Connection pools to the collector's database, for the server and for one-off commands."""

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncCursor, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collector.config import DatabaseSettings

Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]
Observe = Callable[[str, float], None]
"""Called with a statement's kind and its seconds."""

STATEMENT_KINDS = frozenset(
    {"select", "insert", "update", "delete", "with", "create", "alter", "drop", "lock"}
)


def statement_kind(query: object) -> str:
    """A statement's first keyword (select, insert, ...), or other: a label of few values."""
    if isinstance(query, sql.Composable):
        text = query.as_string(None)[:32]
    elif isinstance(query, bytes):
        text = query[:32].decode(errors="replace")
    else:
        text = str(query)[:32]
    words = text.split(maxsplit=1)
    kind = words[0].lower() if words else ""
    return kind if kind in STATEMENT_KINDS else "other"


def timed_cursor(observe: Observe) -> type[AsyncCursor[TupleRow]]:
    """A cursor class that reports each statement's kind and duration."""

    class TimedCursor(AsyncCursor[TupleRow]):
        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> "TimedCursor":
            started = time.perf_counter()
            try:
                await super().execute(query, params, **kwargs)
            finally:
                observe(statement_kind(query), time.perf_counter() - started)
            return self

        async def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> None:
            started = time.perf_counter()
            try:
                await super().executemany(query, params_seq, **kwargs)
            finally:
                observe(statement_kind(query), time.perf_counter() - started)

    return TimedCursor


async def _session(conn: psycopg.AsyncConnection[TupleRow]) -> None:
    # Timestamps come back in UTC, so the API serialises them as ...Z without converting each.
    await conn.execute("SET TIME ZONE 'UTC'")
    # Every statement here is short, but the daily partitions of readings inflate the
    # planner's cost estimates past jit_above_cost: compiling took 20-200 ms per statement,
    # longer than running it.
    await conn.execute("SET jit = off")


def new_pool(url: str, max_size: int, observe: Observe | None = None) -> Pool:
    """A pool of autocommit connections in UTC without JIT, not yet open; `observe` times
    every statement."""
    kwargs: dict[str, Any] = {"autocommit": True}
    if observe is not None:
        kwargs["cursor_factory"] = timed_cursor(observe)
    return AsyncConnectionPool(
        url, min_size=1, max_size=max_size, open=False, kwargs=kwargs, configure=_session
    )


def run_command(settings: DatabaseSettings, action: Callable[[Pool], Awaitable[int]]) -> int:
    """Run a command-line action on a small pool; a database error is one line and status 1."""

    async def with_pool() -> int:
        async with command_pool(settings) as pool:
            return await action(pool)

    try:
        return asyncio.run(with_pool())
    except (psycopg.Error, PoolTimeout) as exc:
        print(f"plantwire-collector: database: {exc}", file=sys.stderr)
        return 1


@asynccontextmanager
async def command_pool(settings: DatabaseSettings) -> AsyncIterator[Pool]:
    """A small open pool for a command-line action; PoolTimeout if the database is not there."""
    pool = new_pool(settings.url.get_secret_value(), max_size=2)
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout)
        yield pool
    finally:
        await pool.close()
