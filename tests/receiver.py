"""A webhook receiver for tests: a real HTTP server that verifies every signature."""

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from tests.servers import free_port


@dataclass
class Delivery:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook receiver on a free port: answers from a script (then 200), optionally late."""

    port: int = field(default_factory=free_port)
    answers: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    requests: list[Delivery] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)
    """The webhook-id of each request as it arrives, before any answer."""
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self, path: str = "/hook") -> list[Delivery]:
        """What it accepted (a 2xx), in arrival order."""
        return [r for r in self.requests if r.path == path and 200 <= r.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived.append(request.headers["webhook-id"])
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))  # the receiver is slow, the test waits not
        status = self.answers.pop(0) if self.answers else 200
        headers = {k.lower(): v for k, v in request.headers.items()}
        if 200 <= status < 300:
            # A receiver that accepts what does not verify would prove nothing.
            assert any(self._verifies(secret, body, headers) for secret in self.secrets)
        self.requests.append(Delivery(request.path, headers, body, status))
        return web.Response(status=status)

    @staticmethod
    def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
