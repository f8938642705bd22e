"""Wire version 3 against real Mosquitto and PostgreSQL: dictionaries by hash, across replicas."""

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from collector.cli import main as collector_main
from collector.config import CollectorConfig
from shared.acks import AckPayload, decode_ack
from shared.mqtt import MqttClient
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.harness import collector_config, eventually, get_json, running_collector
from tests.payloads import v3_batch
from tests.servers import MosquittoServer

TS = 1_790_000_000_000_000


def config_for(
    database_url: str, mosquitto: MosquittoServer, prefix: str, name: str
) -> CollectorConfig:
    return collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=prefix,
        client_id=f"{prefix}-{name}",
    )


@pytest.fixture
def config(database_url: str, mosquitto: MosquittoServer, topic_prefix: str) -> CollectorConfig:
    return config_for(database_url, mosquitto, topic_prefix, "collector")


def poll(first_seq: int, count: int, *, at: int = TS) -> tuple[int, list[Reading]]:
    """One poll of `count` readings sharing a timestamp, numbered from `first_seq`."""
    readings = [
        Reading("press", f"temp{i}", DataType.FLOAT64, at + first_seq, first_seq + i * 0.5)
        for i in range(count)
    ]
    return first_seq, readings


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


async def count(url: str, sql: str) -> int:
    """A count, queried off the event loop the collector runs on."""
    found = await asyncio.to_thread(rows, url, sql)
    return int(found[0][0])


class Agent:
    """Publishes batches as agent a1 and collects the collector's acknowledgements."""

    def __init__(self, client: MqttClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.acks: list[AckPayload] = []

    async def listen(self) -> None:
        async for message in self.client.messages():
            self.acks.append(decode_ack(message.payload))

    async def send(self, payload: bytes) -> None:
        await self.client.publish(f"{self.prefix}/v1/a1/batch", payload, timeout=5)

    def stored(self) -> list[int]:
        return sorted(b for ack in self.acks for b in ack.stored)

    def asked_for_dictionary(self) -> list[int]:
        return sorted(b for ack in self.acks for b in ack.dictionary)


@pytest.fixture
async def agent(publisher: MqttClient, topic_prefix: str) -> AsyncIterator[Agent]:
    await publisher.subscribe(f"{topic_prefix}/v1/a1/ack")
    agent = Agent(publisher, topic_prefix)
    task = asyncio.create_task(agent.listen())
    yield agent
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_v3_batches_are_stored_once_beside_v2_and_name_their_dictionary(
    config: CollectorConfig, agent: Agent, database_url: str
) -> None:
    with_dictionary = v3_batch("a1", 42, [poll(1, 3), poll(10, 2, at=TS + 5)])
    named = v3_batch("a1", 42, [poll(20, 3), poll(30, 3)], inline=False, compress=False)
    assert named.hash == with_dictionary.hash
    v2_readings = poll(40, 2)[1]
    v2 = encode_batch("a1", 42, [40, 41], v2_readings)
    async with running_collector(config):
        for payload in (with_dictionary.payload, with_dictionary.payload, named.payload, v2):
            await agent.send(payload)

        async def acknowledged() -> bool:
            return agent.stored() == [1, 1, 20, 40]

        await eventually(acknowledged, what="acks of three batches and one duplicate")
    stored = rows(database_url, "SELECT seq FROM readings ORDER BY seq")
    assert [r[0] for r in stored] == [1, 2, 3, 10, 11, 20, 21, 22, 30, 31, 32, 40, 41]
    assert rows(database_url, "SELECT batch_id, last_seq, readings FROM batches ORDER BY 1") == [
        (1, 11, 5),
        (20, 32, 6),
        (40, 41, 2),
    ]
    kept = rows(database_url, "SELECT agent_id, hash, tags, dictionary FROM tag_dictionaries")
    assert kept == [("a1", named.hash, 3, with_dictionary.dictionary)]
    # Tags are shared by both versions: one row per (device, tag, type).
    assert await count(database_url, "SELECT count(*) FROM tags") == 3
    assert await count(database_url, "SELECT count(*) FROM dead_letters") == 0


async def test_a_replica_finds_a_dictionary_another_collector_kept(
    config: CollectorConfig,
    agent: Agent,
    database_url: str,
    mosquitto: MosquittoServer,
    topic_prefix: str,
) -> None:
    first = v3_batch("a1", 42, [poll(1, 4)])
    named = v3_batch("a1", 42, [poll(5, 4, at=TS + 9)], inline=False)
    async with running_collector(config):
        await agent.send(first.payload)

        async def first_stored() -> bool:
            return agent.stored() == [1]

        await eventually(first_stored, what="the batch that carried its dictionary")
    replica = config_for(database_url, mosquitto, topic_prefix, "replica")
    async with running_collector(replica) as base:
        await agent.send(named.payload)

        async def both_stored() -> bool:
            return agent.stored() == [1, 5]

        await eventually(both_stored, what="the batch that only named its dictionary")
        status, body = await get_json(
            f"{base}/api/v1/readings", tag="press/temp2", **{"from": "2026-01-01T00:00:00Z"}
        )
    assert status == 200
    assert [r["value"] for r in body["readings"]] == [2.0, 6.0]
    assert agent.asked_for_dictionary() == []


async def test_a_batch_naming_an_unknown_dictionary_is_asked_for_again_and_nothing_kept(
    config: CollectorConfig, agent: Agent, database_url: str
) -> None:
    unknown = v3_batch("a1", 42, [poll(7, 3)], inline=False)
    resent = v3_batch("a1", 42, [poll(7, 3)])
    async with running_collector(config) as base:
        await agent.send(unknown.payload)

        async def asked() -> bool:
            return agent.asked_for_dictionary() == [7]

        await eventually(asked, what="the ack asking for the dictionary")
        assert await count(database_url, "SELECT count(*) FROM readings") == 0
        assert await count(database_url, "SELECT count(*) FROM batches") == 0
        assert await count(database_url, "SELECT count(*) FROM dead_letters") == 0
        assert agent.stored() == []
        status, text = await get_text(f"{base}/metrics")
        assert status == 200
        assert 'plantwire_collector_messages_total{outcome="dictionary"} 1.0' in text
        # The agent sends the batch again with its dictionary: it is stored.
        await agent.send(resent.payload)

        async def stored() -> bool:
            return agent.stored() == [7]

        await eventually(stored, what="the batch sent again with its dictionary")
    assert await count(database_url, "SELECT count(*) FROM readings") == 3


async def get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_dead_letters_that_name_their_dictionary_are_shown_and_replayed_with_it(
    config: CollectorConfig,
    agent: Agent,
    database_url: str,
    mosquitto: MosquittoServer,
    topic_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = v3_batch("a1", 42, [poll(1, 2)])
    # Its second block is from 1999: refused by the collector's timestamp window.
    partly = v3_batch("a1", 42, [poll(3, 2), poll(9, 1, at=915_148_800_000_000)], inline=False)
    async with running_collector(config) as base:
        await agent.send(first.payload)
        await agent.send(partly.payload)

        async def stored() -> bool:
            return agent.stored() == [1, 3]

        await eventually(stored, what="both batches, the second partly")
        letters = await asyncio.to_thread(
            rows, database_url, "SELECT id, partial, readings FROM dead_letters"
        )
        assert [(partial, readings) for _, partial, readings in letters] == [(True, 1)]
        letter_id = str(letters[0][0])
        status, detail = await get_json(f"{base}/api/v1/dead-letters/{letter_id}")
    assert status == 200
    assert base64.b64decode(detail["payload_base64"]) == partly.payload
    assert detail["tag_dictionary"]["hash"] == partly.hash
    assert detail["tag_dictionary"]["dictionary"]["name"] == ["temp0", "temp1"]

    # The command line, as a collector that has never seen the dictionary, with a window wide
    # enough now for 1999.
    path = tmp_path / "collector.yaml"
    path.write_text(
        f"database: {{url: '{database_url}'}}\n"
        f"mqtt: {{url: '{mosquitto.url}', topic_prefix: '{topic_prefix}'}}\n"
        "ingest: {oldest_timestamp: '1990-01-01T00:00:00Z'}\n"
    )

    def cli(*argv: str) -> tuple[int, str]:
        status = collector_main(["dead-letters", *argv, "--config", str(path)])
        return status, capsys.readouterr().out

    status, out = await asyncio.to_thread(cli, "show", letter_id)
    assert status == 0
    assert f"tag dictionary:   {partly.hash} (from tag_dictionaries)" in out
    assert partly.dictionary.decode() in out
    status, out = await asyncio.to_thread(cli, "replay", "--id", letter_id)
    assert (status, out) == (0, f"{letter_id}: replayed, 1 readings stored\n")
    assert await count(database_url, "SELECT count(*) FROM readings WHERE seq = 9") == 1


def test_a_dead_letter_naming_a_dictionary_no_collector_kept_still_fails_to_replay(
    database_url: str,
    mosquitto: MosquittoServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    orphan = v3_batch("a1", 42, [poll(3, 2)], inline=False)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO dead_letters (topic, payload, error, agent_id, reason, epoch, batch_id,"
            " readings) VALUES ('plantwire/v1/a1/batch', %s, 'store', 'a1', 'store', 42, 3, 2)"
            " RETURNING id",
            [orphan.payload],
        ).fetchone()
    assert row is not None
    path = tmp_path / "collector.yaml"
    path.write_text(f"database: {{url: '{database_url}'}}\nmqtt: {{url: '{mosquitto.url}'}}\n")
    status = collector_main(["dead-letters", "show", str(row[0]), "--config", str(path)])
    out = capsys.readouterr().out
    assert status == 0
    assert f"{orphan.hash} (not kept by any collector)" in out
    status = collector_main(["dead-letters", "replay", "--id", str(row[0]), "--config", str(path)])
    out = capsys.readouterr().out
    assert status == 1
    assert f"still failing: batch 3 names tag dictionary {orphan.hash}" in out
