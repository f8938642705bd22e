"""The authenticator's memory: bounded caches, who was active lately, and saving last use."""

import asyncio
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import make_mocked_request

from collector.api import auth
from collector.api.auth import Authenticator
from collector.api.keys import ApiKey, ApiKeys, hash_key
from collector.api.operations import Role
from tests.harness import eventually


def key_of(prefix: str) -> str:
    return f"pwk_{prefix}_{'s' * 32}"


class FakeKeys:
    """The api_keys table in memory, counting lookups; touch fails while `failing` is set."""

    def __init__(self, prefixes: list[str]) -> None:
        self.stored = {
            prefix: ApiKey(
                id=number,
                prefix=prefix,
                key_hash=hash_key(key_of(prefix)),
                name=prefix,
                role=Role.VIEWER,
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                created_by="tests",
                expires_at=None,
                revoked_at=None,
                last_used_at=None,
            )
            for number, prefix in enumerate(prefixes, 1)
        }
        self.lookups: list[str] = []
        self.touched: list[list[str]] = []
        self.failing = False

    async def find(self, prefix: str) -> ApiKey | None:
        self.lookups.append(prefix)
        return self.stored.get(prefix)

    async def touch(self, prefixes: list[str]) -> None:
        if self.failing:
            raise ConnectionError("database gone")
        self.touched.append(prefixes)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


PREFIXES = [f"{n:08x}" for n in range(1, 13)]


def authenticator(keys: FakeKeys, clock: Clock | None = None) -> Authenticator:
    fake: ApiKeys = keys  # type: ignore[assignment]  # the two methods it calls
    return Authenticator(fake, clock or Clock())


async def use(authn: Authenticator, prefix: str) -> ApiKey:
    headers = {"Authorization": f"Bearer {key_of(prefix)}"}
    return await authn.authenticate(make_mocked_request("GET", "/api/v1/agents", headers=headers))


async def test_keys_are_hashed_once_until_the_digest_cache_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[str] = []

    def counting_hash(key: str) -> str:
        hashed.append(key[4:12])
        return hash_key(key)

    monkeypatch.setattr(auth, "CACHE_MAX", 2)
    monkeypatch.setattr(auth, "hash_key", counting_hash)
    authn = authenticator(FakeKeys(PREFIXES))
    for prefix in PREFIXES[:2]:
        await use(authn, prefix)
    await use(authn, PREFIXES[0])
    assert hashed == PREFIXES[:2], "a key sent again is not hashed again"
    await use(authn, PREFIXES[2])  # full: forget every digest, then remember this one
    await use(authn, PREFIXES[2])
    await use(authn, PREFIXES[0])
    assert hashed == [*PREFIXES[:3], PREFIXES[0]]


async def test_a_full_record_cache_drops_its_oldest_tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CACHE_MAX", 10)
    keys = FakeKeys(PREFIXES)
    authn = authenticator(keys)
    for prefix in PREFIXES[:11]:
        assert (await use(authn, prefix)).prefix == prefix
    assert keys.lookups == PREFIXES[:11]
    await use(authn, PREFIXES[1])  # still cached
    await use(authn, PREFIXES[0])  # the oldest, dropped to make room: asked again
    assert keys.lookups == [*PREFIXES[:11], PREFIXES[0]]


async def test_active_counts_keys_used_in_the_last_five_minutes() -> None:
    clock = Clock()
    authn = authenticator(FakeKeys(PREFIXES), clock)
    await use(authn, PREFIXES[0])
    clock.now = 200.0
    await use(authn, PREFIXES[1])
    assert authn.active() == 2
    clock.now = 301.0
    assert authn.active() == 1
    clock.now = 501.0
    assert authn.active() == 0


async def test_last_use_is_saved_in_batches_and_kept_when_saving_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "TOUCH_INTERVAL_S", 0.01)
    keys = FakeKeys(PREFIXES)
    authn = authenticator(keys)
    await use(authn, PREFIXES[1])
    await use(authn, PREFIXES[0])
    keys.failing = True
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(authn.save_usage(), timeout=5)
    await use(authn, PREFIXES[2])  # the supervisor restarts it; meanwhile another key is used
    keys.failing = False
    saving = asyncio.create_task(authn.save_usage())
    try:

        async def saved_twice() -> bool:
            return len(keys.touched) >= 2

        await eventually(saved_twice, timeout=5, what="two batches of last use")
    finally:
        saving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await saving
    assert keys.touched[0] == PREFIXES[:3], "the failed batch goes with the next"
    assert keys.touched[1] == [], "a saved batch is not saved again"
