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
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import RateLimiter, SlidingWindowCounterRateLimiter

from collector.api.keys import ApiKey
from collector.api.operations import Role
from collector.api.problems import ProblemError
from collector.config import RateLimitSettings
from collector.metrics import CollectorMetrics

log = logging.getLogger(__name__)

LIMIT_HEADERS = web.RequestKey("limit_headers", dict[str, str])


def limit_headers(item: RateLimitItem, remaining: int, reset_in: int) -> dict[str, str]:
    """The IETF RateLimit-Policy and RateLimit fields for one policy named by its role."""
    window = item.get_expiry()
    return {
        "RateLimit-Policy": f'"key";q={item.amount};w={window}',
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
                key_prefix="plantwire",
                connect_timeout=timeout,
                stream_timeout=timeout,
            )
            self._shared = SlidingWindowCounterRateLimiter(storage)
        self._shared_down_until = 0.0
        self._shared_ok = self._shared is not None
        metrics.rate_limit_shared.set(1 if self._shared_ok else 0)

    async def check(self, request: web.Request, key: ApiKey) -> None:
        """Count this request; 429 with Retry-After when the key is over its limit."""
        item = self._items[key.role]
        limiter = self._limiter()
        try:
            async with asyncio.timeout(self._settings.redis_timeout):
                allowed = await limiter.hit(item, key.prefix)
                stats = await limiter.get_window_stats(item, key.prefix)
        except Exception as exc:  # Redis unreachable, slow or failing: count here instead
            if limiter is self._local:
                raise
            self._fall_back(exc)
            limiter = self._local
            allowed = await limiter.hit(item, key.prefix)
            stats = await limiter.get_window_stats(item, key.prefix)
        if limiter is not self._local and not self._shared_ok:
            log.info("rate limits: Redis answers again; counting across replicas")
            self._shared_ok = True
            self._metrics.rate_limit_shared.set(1)
        reset_in = math.ceil(stats.reset_time - self._clock())
        headers = limit_headers(item, stats.remaining, reset_in)
        if not allowed:
            self._metrics.rate_limited.labels(role=key.role.value).inc()
            headers["Retry-After"] = str(max(reset_in, 1))
            raise ProblemError(
                429,
                "Too Many Requests",
                f"key {key.prefix} ({key.role.value}) is limited to {item}; try again in"
                f" {max(reset_in, 1)} s",
                headers=headers,
            )
        request[LIMIT_HEADERS] = headers

    def _limiter(self) -> RateLimiter:
        if self._shared is None or self._shared_down_until > self._clock():
            return self._local
        return self._shared

    def _fall_back(self, exc: BaseException) -> None:
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
