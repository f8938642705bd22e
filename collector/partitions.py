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
        except psycopg.errors.DuplicateTable:
            continue  # another collector created it a moment ago
        except psycopg.errors.CheckViolation:
            # The default partition already holds rows of that day: they stay there.
            log.warning("partition %s not created: readings of that day are in the default", name)
            continue
        created.append(name)
    return created


def day_of(name: str) -> date | None:
    """The day a partition holds, from its name; None for other tables."""
    if not name.startswith("readings_p") or len(name) != len("readings_p20260101"):
        return None
    try:
        return datetime.strptime(name[len("readings_p") :], "%Y%m%d").date()
    except ValueError:
        return None


async def drop_expired_partitions(
    conn: psycopg.AsyncConnection[TupleRow], today: date, retention_days: int
) -> list[str]:
    """Drop the daily partitions wholly older than `retention_days`; return their names."""
    cursor = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'readings'::regclass"
    )
    cutoff = today - timedelta(days=retention_days)
    dropped = []
    for (name,) in await cursor.fetchall():
        day = day_of(name)
        if day is not None and day < cutoff:
            await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            dropped.append(name)
            log.info("dropped partition %s (older than %d days)", name, retention_days)
    return dropped


async def forget_old_batches(conn: psycopg.AsyncConnection[TupleRow], ledger_days: int) -> int:
    """Delete batch ids older than the ledger's horizon; return how many."""
    cursor = await conn.execute(
        "DELETE FROM batches WHERE received_at < now() - make_interval(days => %s)",
        (ledger_days,),
    )
    return cursor.rowcount
