"""Rate limits per key: in-process, and shared by two collector processes through real Redis."""

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import AUTH, collector_config, eventually, running_collector
from tests.servers import MosquittoServer, RedisServer, free_port, running_redis

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(url, headers=headers) as response,
    ):
        body = await response.json(content_type=None) if response.status != 204 else None
        return response.status, dict(response.headers), body


async def metric(base: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_key_over_its_limit_gets_429_with_retry_after(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    config = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        sections={"rate_limits": {"admin": "3/minute"}},
    )
    async with running_collector(config) as base:
        answers = [await get(f"{base}/api/v1/agents") for _ in range(4)]
        assert [status for status, _, _ in answers] == [200, 200, 200, 429]
        _, headers, _ = answers[0]
        assert headers["RateLimit-Policy"] == '"key";q=3;w=60'
        assert "RateLimit" not in headers  # what is left costs a round trip: on 429 only
        _, headers, problem = answers[3]
        assert headers["Content-Type"].startswith("application/problem+json")
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert headers["RateLimit"].startswith('"key";r=0;')
        assert problem["status"] == 429
        assert "3 per 1 minute" in problem["detail"]
        # Open routes are not counted.
        assert (await get(f"{base}/healthz"))[0] == 200
        assert await metric(base, "plantwire_collector_rate_limited_total") == 1


def start_collector(config: Path, log: Path) -> "subprocess.Popen[bytes]":
    """plantwire-collector run, in its own process, logging to a file."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "plantwire-collector"), "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def two_collectors(
    database_url: str,
    mosquitto: MosquittoServer,
    topic_prefix: str,
    redis: RedisServer,
    tmp_path: Path,
) -> AsyncIterator[list[str]]:
    processes: list[subprocess.Popen[bytes]] = []
    bases = []
    try:
        for name in ("a", "b"):
            port = free_port()
            config = tmp_path / f"collector-{name}.yaml"
            config.write_text(
                f"database:\n  url: {database_url}\n"
                f"mqtt:\n  url: {mosquitto.url}\n  topic_prefix: {topic_prefix}\n"
                f"  client_id: {topic_prefix}-{name}\n"
                f"http:\n  host: 127.0.0.1\n  port: {port}\n"
                f"rate_limits:\n  admin: 10/minute\n  redis_url: {redis.url}\n"
                "  redis_retry: 1s\n"
            )
            processes.append(start_collector(config, tmp_path / f"collector-{name}.log"))
            bases.append(f"http://127.0.0.1:{port}")

        async def ready() -> bool:
            try:
                return all([(await get(f"{base}/readyz"))[0] == 200 for base in bases])
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=60, what="both collectors to be ready")
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)


async def test_two_collectors_share_one_limit_through_redis_and_serve_without_it(
    two_collectors: list[str], redis: RedisServer
) -> None:
    a, b = two_collectors
    statuses = []
    for _ in range(8):
        for base in (a, b):
            statuses.append((await get(f"{base}/api/v1/agents"))[0])
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 6, statuses
    for base in (a, b):
        assert await metric(base, "plantwire_collector_rate_limit_shared") == 1

    await asyncio.to_thread(redis.stop)
    # Without Redis each replica counts on its own: the API keeps serving.
    for base in (a, b):
        status, _, body = await get(f"{base}/api/v1/agents")
        assert status == 200, body
        assert await metric(base, "plantwire_collector_rate_limit_fallbacks_total") >= 1
        assert await metric(base, "plantwire_collector_rate_limit_shared") == 0

    await asyncio.to_thread(redis.start)

    async def shared_again() -> bool:
        for base in (a, b):
            await get(f"{base}/api/v1/agents")
        return all(
            [await metric(base, "plantwire_collector_rate_limit_shared") == 1 for base in (a, b)]
        )

    await eventually(shared_again, timeout=30, what="both collectors to count in Redis again")


async def test_leases_from_redis_never_let_a_key_past_its_limit(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str, redis: RedisServer
) -> None:
    # 300 a minute: each round trip to Redis leases 3, spent here (some in parallel).
    config = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        sections={"rate_limits": {"admin": "300/minute", "redis_url": redis.url}},
    )
    async with running_collector(config) as base:
        statuses: list[int] = []
        for _ in range(32):
            answers = await asyncio.gather(*(get(f"{base}/api/v1/agents") for _ in range(10)))
            statuses.extend(status for status, _, _ in answers)
        assert statuses.count(429) == 20, statuses
        assert statuses.count(200) == 300
