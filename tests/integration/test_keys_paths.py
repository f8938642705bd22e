"""The api_keys table against real PostgreSQL: prefix clashes on create, and last use."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg_pool import PoolClosed

from collector.api import keys as keys_module
from collector.api.keys import ApiKeys, key_prefix
from collector.api.operations import Role
from collector.pools import Pool, new_pool
from tests.harness import TEST_KEY

pytestmark = pytest.mark.integration
TAKEN = key_prefix(TEST_KEY)
"""The prefix of the key every test database already holds."""


@pytest.fixture
async def api_keys(database_url: str) -> AsyncIterator[ApiKeys]:
    pool: Pool = new_pool(database_url, 2)
    await pool.open(wait=True, timeout=30)
    try:
        yield ApiKeys(pool)
    finally:
        await pool.close()


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Prefixes new keys will get, in order (the taken one first, to force clashes)."""
    prefixes: list[str] = []

    def scripted_key() -> tuple[str, str]:
        prefix = prefixes.pop(0)
        return f"pwk_{prefix}_{'s' * 32}", prefix

    monkeypatch.setattr(keys_module, "new_key", scripted_key)
    return prefixes


async def test_a_prefix_that_is_taken_is_drawn_again(api_keys: ApiKeys, drawn: list[str]) -> None:
    assert TAKEN is not None
    drawn.extend([TAKEN, TAKEN, "0a0b0c0d"])
    stored, key = await api_keys.create("ops", Role.VIEWER, None, "tests")
    assert stored.prefix == "0a0b0c0d"
    assert key == f"pwk_0a0b0c0d_{'s' * 32}"
    assert drawn == []
    found = await api_keys.find("0a0b0c0d")
    assert found is not None
    assert found.name == "ops"


async def test_a_third_clash_in_a_row_is_an_error_not_a_loop(
    api_keys: ApiKeys, drawn: list[str]
) -> None:
    assert TAKEN is not None
    drawn.extend([TAKEN, TAKEN, TAKEN, "0a0b0c0d"])
    with pytest.raises(psycopg.errors.UniqueViolation):
        await api_keys.create("ops", Role.VIEWER, None, "tests")
    assert drawn == ["0a0b0c0d"], "three draws, then it gives up"
    assert [key.prefix for key in await api_keys.listing()] == [TAKEN]


async def test_touch_records_when_keys_were_last_used(api_keys: ApiKeys) -> None:
    assert TAKEN is not None
    before = await api_keys.find(TAKEN)
    assert before is not None
    assert before.last_used_at is None
    used_at = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    await api_keys.touch([TAKEN, "ffffffff"], used_at)
    after = await api_keys.find(TAKEN)
    assert after is not None
    assert after.last_used_at == used_at
    await api_keys.touch([TAKEN])  # without a time: now
    latest = await api_keys.find(TAKEN)
    assert latest is not None
    assert latest.last_used_at is not None
    assert latest.last_used_at > used_at


async def test_touching_no_keys_needs_no_connection(database_url: str) -> None:
    closed = ApiKeys(new_pool(database_url, 1))  # never opened
    await closed.touch([])
    with pytest.raises(PoolClosed):
        await closed.touch([TAKEN or ""])
