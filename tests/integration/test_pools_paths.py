"""Every statement on a pool connection is timed, executemany included."""

import psycopg
import pytest

from collector.pools import new_pool

pytestmark = pytest.mark.integration


async def test_executemany_is_timed_once_as_its_statement_kind(database_url: str) -> None:
    observed: list[tuple[str, float]] = []
    pool = new_pool(database_url, 1, lambda kind, seconds: observed.append((kind, seconds)))
    await pool.open(wait=True, timeout=10)
    try:
        async with pool.connection() as conn:
            observed.clear()  # whatever opening the pool ran
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO agents (agent_id) VALUES (%s)", [("press-1",), ("press-2",)]
                )
                with pytest.raises(psycopg.errors.UniqueViolation):
                    await cursor.executemany(
                        b"insert INTO agents (agent_id) VALUES (%s)", [("press-1",)]
                    )
    finally:
        await pool.close()
    assert [kind for kind, _ in observed] == ["insert", "insert"], "a failed one counts too"
    assert all(seconds >= 0 for _, seconds in observed)
    with psycopg.connect(database_url) as check:
        assert check.execute("SELECT count(*) FROM agents").fetchone() == (2,)
