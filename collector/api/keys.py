"""API keys: made at random, shown once, kept only as a hash, found by a public prefix."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from collector.api.operations import Role
from shared.invariants import required

KEY_SCHEME = "pwk"
"""Every key starts with this, so secret scanners and people recognise one."""

_COLUMNS = sql.SQL(
    "id, prefix, key_hash, name, role, created_at, created_by, expires_at, revoked_at, last_used_at"
)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as stored: everything but the key itself."""

    id: int
    prefix: str
    key_hash: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def usable(self, now: datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def new_key() -> tuple[str, str]:
    """A fresh key and its prefix: pwk_<prefix>_<secret>, 192 random bits in the secret."""
    prefix = secrets.token_hex(4)
    return f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(24)}", prefix


def key_prefix(key: str) -> str | None:
    """The prefix of something shaped like a key, or None."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or len(prefix) != 8 or not secret or len(key) > 200:
        return None
    return prefix


def hash_key(key: str) -> str:
    """What is stored of a key: SHA-256 suffices, a key has far more entropy than a password."""
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key: str, stored: ApiKey, digest: str | None = None) -> bool:
    """Whether `key` (or its `digest`, if known) is the key `stored` was made from."""
    return hmac.compare_digest(digest or hash_key(key), stored.key_hash)


def _key(row: TupleRow) -> ApiKey:
    values = list(row)
    values[4] = Role(values[4])
    return ApiKey(*values)


Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


class ApiKeys:
    """The api_keys table."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def create(
        self, name: str, role: Role, expires_at: datetime | None, created_by: str
    ) -> tuple[ApiKey, str]:
        """Make and store a key; return its record and the key, which is never shown again."""
        for _ in range(2):
            try:
                return await self._insert(name, role, expires_at, created_by)
            except psycopg.errors.UniqueViolation:
                continue  # 32 random bits of prefix met an existing one: draw again
        return await self._insert(name, role, expires_at, created_by)  # a third clash is raised

    async def _insert(
        self, name: str, role: Role, expires_at: datetime | None, created_by: str
    ) -> tuple[ApiKey, str]:
        key, prefix = new_key()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL(
                    "INSERT INTO api_keys (prefix, key_hash, name, role, expires_at,"
                    " created_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {columns}"
                ).format(columns=_COLUMNS),
                (prefix, hash_key(key), name, role.value, expires_at, created_by),
            )
            row = await cursor.fetchone()
        return _key(required(row, "the inserted key's row")), key

    async def find(self, prefix: str) -> ApiKey | None:
        """The key with this prefix, usable or not."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT {columns} FROM api_keys WHERE prefix = %s").format(
                    columns=_COLUMNS
                ),
                (prefix,),
            )
            row = await cursor.fetchone()
        return None if row is None else _key(row)

    async def listing(self, after_id: int = 0, limit: int = 1000) -> list[ApiKey]:
        """Keys by id (oldest first), revoked and expired ones included."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT {columns} FROM api_keys WHERE id > %s ORDER BY id LIMIT %s").format(
                    columns=_COLUMNS
                ),
                (after_id, limit),
            )
            return [_key(row) for row in await cursor.fetchall()]

    async def revoke(self, prefix: str, revoked_by: str) -> ApiKey | None:
        """Revoke a key (again revoking keeps the first time); None if there is no such key."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL(
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()),"
                    " revoked_by = coalesce(revoked_by, %s) WHERE prefix = %s RETURNING {columns}"
                ).format(columns=_COLUMNS),
                (revoked_by, prefix),
            )
            row = await cursor.fetchone()
        return None if row is None else _key(row)

    async def touch(self, prefixes: list[str], at: datetime | None = None) -> None:
        """Record that these keys were used (a listing shows when each was last)."""
        if not prefixes:
            return
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE api_keys SET last_used_at = %s WHERE prefix = ANY(%s)",
                (at or datetime.now(UTC), prefixes),
            )
