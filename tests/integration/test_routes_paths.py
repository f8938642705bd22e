"""With rate_limits.enabled false, keys are still checked but never counted or refused."""

import aiohttp
import pytest

from tests.harness import AUTH, collector_config, running_collector
from tests.servers import MosquittoServer

pytestmark = pytest.mark.integration


async def test_without_rate_limits_keys_are_checked_but_never_counted(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    config = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        sections={"rate_limits": {"enabled": False, "admin": "1/minute"}},
    )
    async with running_collector(config) as base, aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(f"{base}/api/v1/agents", headers=AUTH) as response:
                assert response.status == 200
                assert "RateLimit-Policy" not in response.headers
                assert "RateLimit" not in response.headers
        async with session.get(f"{base}/api/v1/agents") as response:
            assert response.status == 401
