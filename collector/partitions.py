"""Daily partitions of the readings table: created ahead, on demand for backlogs, and expired.

readings_default catches only what the configured window refuses to place (readings of days
too far back or ahead); maintenance moves them into their day's partition once the window
covers that day, and retention covers them too.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)
# Any 64-bit constant works, as long as every collector uses the same one.
_PARTITION_LOCK = 0x7077_7061_7274


@dataclass(frozen=True, slots=True)
class PartitionWindow:
    """Which days get a partition of their own, counted from today (UTC)."""

    days_back: int
    days_ahead: int

    def covers(self, day: date, today: date) -> bool:
        """Whether readings of `day` get that day's partition."""
        return (
            today - timedelta(days=self.days_back) <= day <= today + timedelta(days=self.days_ahead)
        )


def partition_name(day: date) -> str:
    """Name of the partition holding one UTC day."""
    return f"readings_p{day:%Y%m%d}"


def midnight(day: date) -> datetime:
    """The start of a UTC day."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def _create(conn: psycopg.AsyncConnection[TupleRow], day: date) -> None:
    """Create the day's table, then attach it as a partition.

    Attaching takes a weaker lock on `readings` than CREATE ... PARTITION OF does, so the API's
    reads and other collectors' COPYs go on meanwhile (only readings_default is locked while
    it is checked for readings of that day).
    """
    name = sql.Identifier(partition_name(day))
    start = midnight(day)
    await conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
            name
        )
    )
    await conn.execute(
        sql.SQL("ALTER TABLE readings ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            name, sql.Literal(start), sql.Literal(start + timedelta(days=1))
        )
    )


async def ensure_partition(conn: psycopg.AsyncConnection[TupleRow], day: date) -> bool:
    """Make sure the day's partition exists; return whether this call created it.

    Collectors racing to create it take turns (an advisory lock: concurrent creations deadlock
    on the parent and the default partition). If readings_default
    already holds readings of that day, they move into the new partition in the same
    transaction.
    """
    if await _exists(conn, day):
        return False
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        if await _exists(conn, day):
            return False  # another collector created it while this one waited
        try:
            async with conn.transaction():  # a savepoint: the CHECK failure must not end all
                await _create(conn, day)
            return True
        except psycopg.errors.DuplicateTable:
            return False  # created by a collector that does not take the lock
        except psycopg.errors.CheckViolation:
            pass
        moved = await _create_from_default(conn, day)
    log.info(
        "partition %s created; moved %d readings from readings_default", partition_name(day), moved
    )
    return True


async def _exists(conn: psycopg.AsyncConnection[TupleRow], day: date) -> bool:
    # pg_class through a fresh snapshot: to_regclass's catalog cache may not have seen a
    # table another session created since this transaction took its last lock.
    cursor = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'readings'::regclass AND c.relname = %s)",
        (partition_name(day),),
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _create_from_default(conn: psycopg.AsyncConnection[TupleRow], day: date) -> int:
    """Within a transaction: move the day's readings out of the default, create, put back."""
    start = midnight(day)
    cursor = await conn.execute(
        "CREATE TEMPORARY TABLE moving ON COMMIT DROP AS WITH gone AS ("
        " DELETE FROM readings_default WHERE ts >= %s AND ts < %s RETURNING *)"
        " SELECT * FROM gone",
        (start, start + timedelta(days=1)),
    )
    await _create(conn, day)
    await conn.execute("INSERT INTO readings SELECT * FROM moving")
    return cursor.rowcount


async def ensure_partitions(
    conn: psycopg.AsyncConnection[TupleRow], today: date, days_ahead: int
) -> list[str]:
    """Create the partitions for yesterday through `days_ahead` days on; return those created."""
    days = [today + timedelta(days=offset) for offset in range(-1, days_ahead + 1)]
    return await _ensure_days(conn, days)


async def _ensure_days(conn: psycopg.AsyncConnection[TupleRow], days: list[date]) -> list[str]:
    """Make sure each day has its partition; return the names of those created now."""
    return [partition_name(day) for day in days if await ensure_partition(conn, day)]


async def drain_default(
    conn: psycopg.AsyncConnection[TupleRow], first: date, last: date
) -> list[str]:
    """Move readings_default's readings of days from `first` to `last` into day partitions."""
    cursor = await conn.execute(
        "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM readings_default"
        " WHERE ts >= %s AND ts < %s ORDER BY 1",
        (
            midnight(first),
            midnight(last) + timedelta(days=1),
        ),
    )
    return await _ensure_days(conn, [row[0] for row in await cursor.fetchall()])


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
    gone = await conn.execute(
        "DELETE FROM readings_default WHERE ts < %s",
        (midnight(cutoff),),
    )
    if gone.rowcount:
        log.info(
            "deleted %d readings older than %d days from readings_default",
            gone.rowcount,
            retention_days,
        )
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
