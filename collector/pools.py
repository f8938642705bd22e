"""Connection pools to the collector's database, for the server and for one-off commands."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.config import DatabaseSettings

Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]


def new_pool(url: str, max_size: int) -> Pool:
    """A pool of autocommit connections, not yet open."""
    return AsyncConnectionPool(
        url, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
    )


@asynccontextmanager
async def command_pool(settings: DatabaseSettings) -> AsyncIterator[Pool]:
    """A small open pool for a command-line action; PoolTimeout if the database is not there."""
    pool = new_pool(settings.url.get_secret_value(), max_size=2)
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout)
        yield pool
    finally:
        await pool.close()
