"""API reads from a real streaming replica (pg_basebackup of the test's primary), and without it."""

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.harness import AUTH, add_test_key, collector_config, eventually, running_collector
from tests.servers import MosquittoServer, PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    primary = PostgresServer()
    replica = PostgresServer(primary=primary)
    try:
        primary.start()
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE plant")
        replica.start()
        yield primary, replica
    finally:
        replica.remove()
        primary.remove()


def execute(url: str, statement: str) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers=AUTH) as session, session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def agents(base: str) -> list[str]:
    status, body = await get(f"{base}/api/v1/agents")
    assert status == 200, body
    return [agent["agent"] for agent in body["agents"]]


async def test_api_reads_go_to_the_replica_and_to_the_primary_while_it_is_down(
    primary_and_replica: tuple[PostgresServer, PostgresServer],
    mosquitto: MosquittoServer,
    topic_prefix: str,
) -> None:
    primary, replica = primary_and_replica
    config = collector_config(
        database_url=primary.url("plant"),
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        sections={
            "database": {
                "url": primary.url("plant"),
                "read_url": replica.url("plant"),
                "connect_timeout": "10s",
            }
        },
    )
    async with running_collector(config) as base:
        await asyncio.to_thread(lambda: _with_key(primary.url("plant")))

        async def key_replicated() -> bool:
            return (await get(f"{base}/api/v1/agents"))[0] == 200

        await eventually(key_replicated, what="the test key to reach the replica")
        status, ready = await get(f"{base}/readyz")
        assert status == 200
        assert ready["checks"]["replica"] == "ok"
        assert ready["checks"]["replica_lag_s"] >= 0

        # Replay paused: what the primary has now, the replica (and so the API) does not.
        await asyncio.to_thread(execute, replica.url("plant"), "SELECT pg_wal_replay_pause()")
        await asyncio.to_thread(
            execute, primary.url("plant"), "INSERT INTO agents (agent_id) VALUES ('late')"
        )
        await asyncio.sleep(1.0)
        assert "late" not in await agents(base)
        _, ready = await get(f"{base}/readyz")
        assert ready["checks"]["replica_lag_s"] > 0
        await asyncio.to_thread(execute, replica.url("plant"), "SELECT pg_wal_replay_resume()")

        async def replicated() -> bool:
            return "late" in await agents(base)

        await eventually(replicated, what="the row to be replayed and read from the replica")

        # The replica goes away: the API answers from the primary, and says so.
        await asyncio.to_thread(replica.stop, "immediate")
        assert await agents(base) == ["late"]
        await asyncio.to_thread(
            execute, primary.url("plant"), "INSERT INTO agents (agent_id) VALUES ('later')"
        )
        assert await agents(base) == ["late", "later"]
        status, ready = await get(f"{base}/readyz")
        assert status == 200
        assert ready["checks"]["replica"].startswith("failing")
        async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
            text = await response.text()
        assert "plantwire_collector_read_fallbacks_total 0.0" not in text

        # Back, and paused again: reads return to it by themselves (the new row vanishes).
        await asyncio.to_thread(replica.start)

        async def caught_up() -> bool:
            rows = await asyncio.to_thread(
                execute, replica.url("plant"), "SELECT count(*) FROM agents"
            )
            return bool(rows[0][0] == 2)

        await eventually(caught_up, what="the replica to catch up")
        await asyncio.to_thread(execute, replica.url("plant"), "SELECT pg_wal_replay_pause()")
        await asyncio.to_thread(
            execute, primary.url("plant"), "INSERT INTO agents (agent_id) VALUES ('latest')"
        )

        async def back_on_replica() -> bool:
            return await agents(base) == ["late", "later"]

        await eventually(back_on_replica, timeout=30, what="reads to return to the replica")
        await asyncio.to_thread(execute, replica.url("plant"), "SELECT pg_wal_replay_resume()")


def _with_key(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        add_test_key(conn)
