"""Requests per key and role, counted in Redis across replicas or in this process without it.

If Redis stops answering, each replica counts on its own (a key may then get up to one
limit per replica) and says so in a metric; Redis is tried again after a pause, and the
shared count resumes by itself.
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable

from aiohttp import web
from limits import RateLimitItem, WindowStats, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import RateLimiter, SlidingWindowCounterRateLimiter

from collector.api.keys import ApiKey
from collector.api.operations import Role
from collector.api.problems import ProblemError
from collector.config import RateLimitSettings
from collector.metrics import CollectorMetrics

log = logging.getLogger(__name__)

LIMIT_HEADERS = web.RequestKey("limit_headers", dict[str, str])
LEASE_PARTS = 100
"""A lease from Redis is this fraction of a key's limit."""


def policy(item: RateLimitItem) -> str:
    """The IETF RateLimit-Policy field of a key's limit."""
    return f'"key";q={item.amount};w={item.get_expiry()}'


def limit_headers(item: RateLimitItem, remaining: int, reset_in: int) -> dict[str, str]:
    """The RateLimit-Policy and RateLimit fields: the limit, what is left and when it resets."""
    return {
        "RateLimit-Policy": policy(item),
        "RateLimit": f'"key";r={max(remaining, 0)};t={max(reset_in, 0)}',
    }


class RateLimits:
    """Counts each key's requests against its role's limit."""

    def __init__(
        self,
        settings: RateLimitSettings,
        metrics: CollectorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._items: dict[Role, RateLimitItem] = {
            Role.VIEWER: parse(settings.viewer),
            Role.OPERATOR: parse(settings.operator),
            Role.ADMIN: parse(settings.admin),
        }
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared: RateLimiter | None = None
        if settings.redis_url is not None:
            url = settings.redis_url.get_secret_value()
            timeout = settings.redis_timeout
            # limits names its asyncio Redis storage async+redis://
            storage = RedisStorage(
                f"async+{url}",
                implementation="redispy",
                key_prefix="plantwire",
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
            )
            self._shared = SlidingWindowCounterRateLimiter(storage)
        self._shared_down_until = 0.0
        self._shared_ok = self._shared is not None
        self._leases: dict[str, tuple[int, float]] = {}
        metrics.rate_limit_shared.set(1 if self._shared_ok else 0)

    async def check(self, request: web.Request, key: ApiKey) -> None:
        """Count this request; 429 with Retry-After and what is left when over the limit.

        An allowed answer carries RateLimit-Policy only: what is left costs a round trip.
        """
        item = self._items[key.role]
        if self._lease_one(key.prefix):
            request[LIMIT_HEADERS] = {"RateLimit-Policy": policy(item)}
            return
        limiter = self._limiter()
        if limiter is self._local:
            lease, stats = await self._count(limiter, item, key.prefix, 1)
        else:
            # From Redis, take a lease of 1 % of the limit at once (1 for small limits), spent
            # here without asking again: a round trip per request would cost a third of the
            # API's throughput. A lease lasts the limit's window. What a replica leased and
            # did not spend is not given back (a key may be refused up to that much early),
            # and a lease spent late in its window may let a key through up to that much late.
            lease = max(1, item.amount // LEASE_PARTS)
            try:
                async with asyncio.timeout(self._settings.redis_timeout):
                    lease, stats = await self._count(limiter, item, key.prefix, lease)
            except Exception as exc:  # Redis unreachable, slow or failing: count here instead
                self._fall_back(exc)
                lease, stats = await self._count(self._local, item, key.prefix, 1)
            else:
                if not self._shared_ok:
                    log.info("rate limits: Redis answers again; counting across replicas")
                    self._shared_ok = True
                    self._metrics.rate_limit_shared.set(1)
        if stats is None:
            if lease > 1:
                # Requests in flight together each take a lease: keep every one.
                held = self._leases.get(key.prefix)
                now = self._clock()
                left = held[0] if held is not None and held[1] > now else 0
                self._leases[key.prefix] = (left + lease - 1, now + item.get_expiry())
            request[LIMIT_HEADERS] = {"RateLimit-Policy": policy(item)}
            return
        reset_in = max(math.ceil(stats.reset_time - self._clock()), 1)
        headers = limit_headers(item, stats.remaining, reset_in)
        headers["Retry-After"] = str(reset_in)
        self._metrics.rate_limited.labels(role=key.role.value).inc()
        raise ProblemError(
            429,
            "Too Many Requests",
            f"key {key.prefix} ({key.role.value}) is limited to {item}; try again in {reset_in} s",
            headers=headers,
        )

    @staticmethod
    async def _count(
        limiter: RateLimiter, item: RateLimitItem, prefix: str, lease: int
    ) -> tuple[int, WindowStats | None]:
        """Take `lease` requests (or 1 if that is too many); the lease, and stats if refused."""
        allowed = await limiter.hit(item, prefix, cost=lease)
        if not allowed and lease > 1:
            lease = 1
            allowed = await limiter.hit(item, prefix)
        return lease, None if allowed else await limiter.get_window_stats(item, prefix)

    def _lease_one(self, prefix: str) -> bool:
        """Spend one request of this key's lease from Redis, if it has one left."""
        lease = self._leases.get(prefix)
        if lease is None:
            return False
        left, until = lease
        if left <= 0 or until <= self._clock():
            del self._leases[prefix]
            return False
        self._leases[prefix] = (left - 1, until)
        return True

    def _limiter(self) -> RateLimiter:
        if self._shared is None or self._shared_down_until > self._clock():
            return self._local
        return self._shared

    def _fall_back(self, exc: BaseException) -> None:
        self._leases.clear()
        if self._shared_ok:
            log.warning(
                "rate limits: Redis failed (%s: %s); counting in this process for %.0f s",
                type(exc).__name__,
                exc,
                self._settings.redis_retry,
            )
        self._shared_ok = False
        self._metrics.rate_limit_fallbacks.inc()
        self._metrics.rate_limit_shared.set(0)
        self._shared_down_until = self._clock() + self._settings.redis_retry


async def add_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Put the RateLimit fields of a counted request on its answer (on_response_prepare)."""
    for name, value in request.get(LIMIT_HEADERS, {}).items():
        response.headers.setdefault(name, value)
