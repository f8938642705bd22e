"""/api/v1/api-keys: create, list and revoke API keys (admin)."""

from datetime import UTC, datetime

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from collector.api.auth import PRINCIPAL
from collector.api.keys import ApiKey
from collector.api.operations import API, Body, Params, Role
from collector.api.pages import next_link, position
from collector.api.params import Timestamp
from collector.api.problems import InvalidParam, ProblemError
from collector.pagination import CURSOR_PATTERN
from collector.state import AUTH, KEYS

MAX_LIMIT = 1000


class ApiKeyOut(BaseModel):
    """A key as listed: never the key itself."""

    prefix: str = Field(
        description="Public part of the key: pwk_<prefix>_...", examples=["3f9a1c07"]
    )
    name: str
    role: Role
    created_at: Timestamp
    created_by: str = Field(description="Who made it: a key's prefix, or cli.")
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None = Field(description="Recorded within about a minute.")
    active: bool = Field(description="Neither revoked nor expired.")


class CreatedApiKey(ApiKeyOut):
    """A new key, shown this once."""

    key: str = Field(description="The key: store it now, it cannot be shown again.")


class ApiKeyPage(BaseModel):
    """A page of keys, oldest first."""

    items: list[ApiKeyOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class NewApiKey(Body):
    """What a new key is for."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    role: Role
    expires_at: AwareDatetime | None = Field(default=None, description="null: never expires.")


class ApiKeyQuery(Params):
    """A page of keys."""

    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class ApiKeyPath(Params):
    """Which key."""

    prefix: str = Field(pattern=r"^[0-9a-f]{8}$", description="The key's prefix.")


def key_out(key: ApiKey) -> ApiKeyOut:
    """A stored key as the API shows it."""
    return ApiKeyOut(
        prefix=key.prefix,
        name=key.name,
        role=key.role,
        created_at=key.created_at,
        created_by=key.created_by,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        active=key.usable(datetime.now(UTC)),
    )


@API.operation(
    "POST",
    "/api/v1/api-keys",
    summary="Create an API key",
    tag="api keys",
    role=Role.ADMIN,
    body=NewApiKey,
    response=CreatedApiKey,
    status=201,
)
async def create_api_key(request: web.Request, _: Params, body: NewApiKey) -> CreatedApiKey:
    """Make a key; the answer is the only time the key is shown."""
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise ProblemError(
            422,
            "Invalid request body",
            "expires_at: must be in the future",
            [InvalidParam("expires_at", "must be in the future")],
        )
    creator = f"key {request[PRINCIPAL].prefix}"
    stored, key = await request.app[KEYS].create(body.name, body.role, body.expires_at, creator)
    return CreatedApiKey(**key_out(stored).model_dump(), key=key)


@API.operation(
    "GET",
    "/api/v1/api-keys",
    summary="API keys, oldest first",
    tag="api keys",
    role=Role.ADMIN,
    params=ApiKeyQuery,
    response=ApiKeyPage,
)
async def list_api_keys(request: web.Request, query: ApiKeyQuery) -> ApiKeyPage:
    """Every key, revoked and expired ones too; paginated."""
    after = position(query.cursor)
    keys = await request.app[KEYS].listing(after[1] if after else 0, query.limit + 1)
    more = len(keys) > query.limit
    keys = keys[: query.limit]
    last = (keys[-1].created_at, keys[-1].id) if more else None
    return ApiKeyPage(items=[key_out(key) for key in keys], next=next_link(request, last))


@API.operation(
    "DELETE",
    "/api/v1/api-keys/{prefix}",
    summary="Revoke an API key",
    tag="api keys",
    role=Role.ADMIN,
    params=ApiKeyPath,
    response=ApiKeyOut,
    errors=(404,),
)
async def revoke_api_key(request: web.Request, path: ApiKeyPath) -> ApiKeyOut:
    """Revoke a key at once on this replica, within seconds on the others; kept for the record."""
    revoked = await request.app[KEYS].revoke(path.prefix, f"key {request[PRINCIPAL].prefix}")
    if revoked is None:
        raise ProblemError(
            404, "Unknown API key", f"no key {path.prefix}", [InvalidParam("prefix", "no such key")]
        )
    request.app[AUTH].forget(path.prefix)
    return key_out(revoked)


@API.operation(
    "GET",
    "/api/v1/me",
    summary="The API key making the request",
    tag="api keys",
    role=Role.VIEWER,
    response=ApiKeyOut,
)
async def get_me(request: web.Request, _: Params) -> ApiKeyOut:
    """The calling key's record: its role tells a client (the dashboard) what to offer."""
    return key_out(request[PRINCIPAL])
