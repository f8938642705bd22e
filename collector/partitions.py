"""Daily partitions of the readings table, created ahead of time."""

import logging
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)


def partition_name(day: date) -> str:
    """Name of the partition holding one UTC day."""
    return f"readings_p{day:%Y%m%d}"


async def ensure_partitions(
    conn: psycopg.AsyncConnection[TupleRow], today: date, days_ahead: int
) -> list[str]:
    """Create the partitions for yesterday through `days_ahead` days on; return those created."""
    created = []
    for offset in range(-1, days_ahead + 1):
        day = today + timedelta(days=offset)
        name = partition_name(day)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        statement = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF readings FOR VALUES FROM ({}) TO ({})"
        ).format(sql.Identifier(name), sql.Literal(start), sql.Literal(start + timedelta(days=1)))
        exists = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        row = await exists.fetchone()
        if row is not None and row[0]:
            continue
        try:
            async with conn.transaction():
                await conn.execute(statement)
        except psycopg.errors.CheckViolation:
            # The default partition already holds rows of that day: they stay there.
            log.warning("partition %s not created: readings of that day are in the default", name)
            continue
        created.append(name)
    return created
