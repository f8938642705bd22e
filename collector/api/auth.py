"""Who is calling: the API key of a request, checked against the store, and its role."""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from collector.api.keys import ApiKey, ApiKeys, hash_key, key_prefix, matches
from collector.api.operations import Operation
from collector.api.problems import InvalidParam, ProblemError

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("principal", ApiKey)
CACHE_S = 5.0
"""How long a key's record is trusted without asking the database: a revocation reaches
every replica within this."""
CACHE_MAX = 10_000
LOOKUPS_AT_ONCE = 2
"""Database lookups of keys not in the cache at one time."""
ACTIVE_WINDOW_S = 300.0
TOUCH_INTERVAL_S = 30.0
CHALLENGE = 'Bearer realm="plantwire"'


def _unauthorized(detail: str, header: str = "Authorization") -> ProblemError:
    return ProblemError(
        401,
        "Unauthorized",
        detail,
        [InvalidParam(header, detail)],
        {"WWW-Authenticate": CHALLENGE},
    )


def presented_key(request: web.Request) -> tuple[str, str] | None:
    """The key a request carries and the header it came in, if any."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _unauthorized("expected Authorization: Bearer <API key>")
        return credentials.strip(), "Authorization"
    header = request.headers.get("X-API-Key")
    if header is not None:
        return header.strip(), "X-API-Key"
    return None


class Authenticator:
    """Finds the key behind a request; remembers records briefly, and which keys were used."""

    def __init__(self, keys: ApiKeys, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._digests: dict[str, str] = {}
        self._lookups = asyncio.Semaphore(LOOKUPS_AT_ONCE)
        self._seen: dict[str, float] = {}
        self._unsaved: set[str] = set()

    async def authenticate(self, request: web.Request) -> ApiKey:
        """The usable key the request carries; 401 otherwise."""
        presented = presented_key(request)
        if presented is None:
            raise _unauthorized("an API key is required: send Authorization: Bearer <key>")
        key, header = presented
        prefix = key_prefix(key)
        stored = None if prefix is None else await self._record(prefix)
        if stored is None or not matches(key, stored, self._digest(key)):
            raise _unauthorized("unknown API key", header)
        if not stored.usable(datetime.now(UTC)):
            raise _unauthorized(f"API key {stored.prefix} is revoked or expired", header)
        now = self._clock()
        self._seen[stored.prefix] = now
        self._unsaved.add(stored.prefix)
        return stored

    def _digest(self, key: str) -> str:
        # Hashed once per key, not per request: clients send the same key again and again.
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) >= CACHE_MAX:
                self._digests.clear()
            digest = self._digests[key] = hash_key(key)
        return digest

    async def _record(self, prefix: str) -> ApiKey | None:
        now = self._clock()
        cached = self._cache.get(prefix)
        if cached is not None and cached[0] > now:
            return cached[1]
        # Few lookups at once: a flood of made-up keys must not take the pool from ingest.
        async with self._lookups:
            stored = await self._keys.find(prefix)
        if len(self._cache) >= CACHE_MAX:
            # The oldest entries go (dicts keep insertion order), not the keys in use.
            for old in list(self._cache)[: CACHE_MAX // 10]:
                del self._cache[old]
        self._cache[prefix] = (now + CACHE_S, stored)
        return stored

    def forget(self, prefix: str) -> None:
        """Drop a key's cached record (this replica revoked it)."""
        self._cache.pop(prefix, None)

    def active(self) -> int:
        """Distinct keys used in the last five minutes."""
        horizon = self._clock() - ACTIVE_WINDOW_S
        for prefix in [p for p, at in self._seen.items() if at < horizon]:
            del self._seen[prefix]
        return len(self._seen)

    async def save_usage(self) -> None:
        """Record last use of the keys used since the last call (runs supervised)."""
        while True:
            await asyncio.sleep(TOUCH_INTERVAL_S)
            used, self._unsaved = sorted(self._unsaved), set()
            try:
                await self._keys.touch(used)
            except BaseException:
                self._unsaved.update(used)  # recorded with the next batch
                raise


def authorize(key: ApiKey, op: Operation) -> None:
    """403 unless the key's role may call the operation."""
    if op.role is not None and not key.role.allows(op.role):
        raise ProblemError(
            403,
            "Forbidden",
            f"{op.method} {op.path} needs the {op.role.value} role; key {key.prefix} is"
            f" {key.role.value}",
        )
