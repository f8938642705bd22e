"""Rate limits when Redis goes away and comes back, step by step on a clock of the test's own."""

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import make_mocked_request

from collector.api.keys import ApiKey
from collector.api.operations import Role
from collector.api.problems import ProblemError
from collector.api.ratelimit import LIMIT_HEADERS, RateLimits
from collector.config import RateLimitSettings
from collector.metrics import CollectorMetrics
from tests.servers import RedisServer, running_redis

pytestmark = pytest.mark.integration
KEY = ApiKey(
    id=1,
    prefix="0a0b0c0d",
    key_hash="0" * 64,
    name="ops",
    role=Role.ADMIN,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    created_by="tests",
    expires_at=None,
    revoked_at=None,
    last_used_at=None,
)


class Clock:
    """Unix time that passes only when the test says so (Redis's windows are in Unix time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def admitted(limits: RateLimits) -> None:
    """One request of KEY is let through, with the policy header."""
    request = make_mocked_request("GET", "/api/v1/agents")
    await limits.check(request, KEY)
    assert request[LIMIT_HEADERS] == {"RateLimit-Policy": '"key";q=2;w=60'}


async def refused(limits: RateLimits) -> None:
    """One request of KEY is refused with 429 and Retry-After."""
    with pytest.raises(ProblemError) as refusal:
        await limits.check(make_mocked_request("GET", "/api/v1/agents"), KEY)
    assert refusal.value.status == 429
    assert 1 <= int(refusal.value.headers["Retry-After"]) <= 60


async def test_without_redis_each_replica_counts_alone_until_redis_answers_again(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="collector.api.ratelimit")
    settings = RateLimitSettings.model_validate(
        {"admin": "2/minute", "redis_url": redis.url, "redis_retry": "5s"}
    )
    metrics, clock = CollectorMetrics(), Clock()
    limits = RateLimits(settings, metrics, clock)

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"plantwire_collector_rate_limit_{name}")

    def said(level: int, text: str) -> int:
        return sum(r.levelno == level and text in r.getMessage() for r in caplog.records)

    await admitted(limits)  # counted in Redis
    assert sample("shared") == 1
    assert sample("fallbacks_total") == 0

    await asyncio.to_thread(redis.stop)
    await admitted(limits)  # Redis refused: counted here instead
    assert sample("shared") == 0
    assert sample("fallbacks_total") == 1
    assert said(logging.WARNING, "Redis failed") == 1
    await admitted(limits)  # here again, without asking Redis during the pause
    assert sample("fallbacks_total") == 1
    await refused(limits)  # the local count holds the key to its limit

    clock.now += 6  # the pause is over: Redis is asked, still fails, and is not warned of twice
    await refused(limits)
    assert sample("fallbacks_total") == 2
    assert said(logging.WARNING, "Redis failed") == 1

    await asyncio.to_thread(redis.start)
    await refused(limits)  # until the pause is over, counting stays here
    clock.now += 6
    await admitted(limits)  # the new Redis has no count of this key yet
    assert sample("shared") == 1
    assert said(logging.INFO, "Redis answers again") == 1
