"""A Server-Sent Events client for tests: reads a stream event by event, with timeouts."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.harness import TEST_KEY


class Sse:
    """A stream client reading the response block by block (a block ends at a blank line)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def block(self, timeout: float = 10.0) -> list[str]:
        """The next block's lines; EOFError when the stream ended."""
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError
                line = raw.decode().rstrip("\r\n")
                if line:
                    lines.append(line)
                elif lines:
                    return lines

    async def event(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next event's fields (comments skipped), its data parsed."""
        while True:
            fields: dict[str, Any] = {}
            for line in await self.block(timeout):
                if not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
            if fields:
                fields["data"] = json.loads(fields["data"])
                return fields

    async def events(self, count: int) -> list[dict[str, Any]]:
        """The next `count` events."""
        return [await self.event() for _ in range(count)]


@contextlib.asynccontextmanager
async def streaming(
    base: str, key: str = TEST_KEY, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[Sse]:
    """A stream client, subscribed once this yields."""
    sent = {"Authorization": f"Bearer {key}", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/stream", params=params, headers=sent) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield Sse(response)
