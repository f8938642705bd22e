"""Rollback: the collector as it was before the newest migration, against the newest schema.

Migrations are expand-then-contract (docs/migrations.md), so rolling the code back one
release must not need the database rolled back. The previous release's code comes from git
history: CI works on a full clone, and a shallow one fails this test rather than skipping it.
"""

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
import yaml

from collector.cli import run_migrations
from collector.migrate import available_migrations
from shared.acks import AckPayload, decode_ack
from shared.mqtt import MqttClient
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.harness import add_test_key, eventually, get_json
from tests.payloads import v3_batch
from tests.servers import MosquittoServer, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AGENT = "rollback-agent"
EPOCH = 11
TS = 1_790_000_000_000_000


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True, timeout=30
    )
    return done.stdout.strip()


def previous_release() -> tuple[str, str]:
    """(commit, migration): the parent of the first commit that added a migration of the
    newest version (a migration renamed before it ever shipped counts from its first name)."""
    if git("rev-parse", "--is-shallow-repository") == "true":
        pytest.fail(
            "this clone is shallow: the rollback test needs the commit before the newest"
            " migration (clone with full history, e.g. actions/checkout's fetch-depth: 0)"
        )
    newest = max(REPO.glob("collector/migrations/[0-9][0-9][0-9][0-9]_*.sql")).name
    versions = f"collector/migrations/{newest[:4]}_*.sql"
    added = git("log", "--diff-filter=A", "--format=%H", "--", versions).splitlines()[-1:]
    if not added:
        pytest.fail(f"collector/migrations/{newest} is not committed yet: commit it first")
    return git("rev-parse", f"{added[0]}^"), newest


def export_tree(commit: str, target: Path) -> None:
    """The collector's and shared packages' files as they were at `commit`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "collector", "shared"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")


def old_collector_config(
    path: Path, database_url: str, mqtt_url: str, prefix: str, http_port: int
) -> None:
    """A configuration using only keys the previous release's config model has."""
    document = {
        "database": {"url": database_url, "connect_timeout": "10s"},
        "mqtt": {"url": mqtt_url, "topic_prefix": prefix, "client_id": prefix},
        "http": {"host": "127.0.0.1", "port": http_port},
        "ingest": {"retry_interval": "200ms"},
    }
    path.write_text(yaml.safe_dump(document))


@contextlib.contextmanager
def old_collector(tree: Path, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m collector run` from the old tree, with this environment's interpreter."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # The old tree comes first on the path, before this checkout's editable install.
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import collector, shared; print(collector.__file__, shared.__file__)",
        ],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert where.stdout.split() == [
        str(tree / "collector" / "__init__.py"),
        str(tree / "shared" / "__init__.py"),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "collector", "run", "--config", str(config)],
            cwd=tree,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.asynccontextmanager
async def acks_of(client: MqttClient, prefix: str) -> AsyncIterator[list[AckPayload]]:
    """Acknowledgements the collector sent the agent, collected while the block runs."""
    acks: list[AckPayload] = []
    await client.subscribe(f"{prefix}/v1/{AGENT}/ack")

    async def collect() -> None:
        async for message in client.messages():
            acks.append(decode_ack(message.payload))

    task = asyncio.create_task(collect())
    try:
        yield acks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def readings(first_seq: int, count: int, tag: str, data_type: DataType) -> list[Reading]:
    return [
        Reading("press", tag, data_type, TS + (first_seq + i) * 1_000_000, first_seq + i)
        for i in range(count)
    ]


def count(url: str, statement: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(statement).fetchone()
    assert row is not None
    return int(row[0])


async def test_the_previous_release_ingests_and_serves_on_the_newest_schema(
    postgres_fresh_url: str,
    mosquitto: MosquittoServer,
    publisher: MqttClient,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    commit, newest = previous_release()
    tree = tmp_path / "previous"
    await asyncio.to_thread(export_tree, commit, tree)
    assert not (tree / "collector" / "migrations" / newest).exists()
    # A shipped migration is never edited: the previous release's schema is this one's prefix.
    shipped = {m.name: m.sql for m in available_migrations()}
    for old in sorted((tree / "collector" / "migrations").glob("*.sql")):
        assert shipped[old.stem[5:]] == old.read_text("utf-8"), f"{old.name} was edited"

    # The newest schema, made by this release's code, with a key it created.
    applied = await run_migrations(postgres_fresh_url)
    assert applied == [m.version for m in available_migrations()]
    with psycopg.connect(postgres_fresh_url, autocommit=True) as conn:
        add_test_key(conn)

    config, log, port = tmp_path / "collector.yaml", tmp_path / "collector.log", free_port()
    old_collector_config(config, postgres_fresh_url, mosquitto.url, topic_prefix, port)
    base = f"http://127.0.0.1:{port}"
    with old_collector(tree, config, log) as process:

        async def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the previous release exited ({process.returncode})")
            try:
                return (await get_json(f"{base}/healthz"))[0] == 200
            except aiohttp.ClientConnectionError:
                return False

        try:
            await eventually(healthy, timeout=30, what="the previous release to be healthy")
            async with acks_of(publisher, topic_prefix) as acks:
                topic = f"{topic_prefix}/v1/{AGENT}/batch"
                v2 = encode_batch(AGENT, EPOCH, [1, 2, 3], readings(1, 3, "temp", DataType.FLOAT64))
                v3 = v3_batch(AGENT, EPOCH, [(4, readings(4, 2, "count", DataType.UINT32))])
                await publisher.publish(topic, v2, timeout=5)
                await publisher.publish(topic, v3.payload, timeout=5)
                await publisher.publish(topic, v2, timeout=5)  # a resend: stored once

                async def acknowledged() -> bool:
                    return {b for ack in acks for b in ack.stored} >= {1, 4}

                await eventually(acknowledged, timeout=20, what="both batches acknowledged")
                assert {ack.epoch for ack in acks} == {EPOCH}
                assert not [ack for ack in acks if ack.rejected or ack.refused]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-4000:]}") from exc

        assert count(postgres_fresh_url, "SELECT count(*) FROM batches") == 2
        assert count(postgres_fresh_url, "SELECT count(*) FROM readings") == 5
        status, body = await get_json(
            f"{base}/api/v1/readings",
            agent=AGENT,
            tag="press/temp",
            **{"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"},
        )
        assert status == 200, body
        assert [r["value"] for r in body["readings"]] == [1.0, 2.0, 3.0]
        status, body = await get_json(
            f"{base}/api/v1/readings",
            agent=AGENT,
            tag="press/count",
            **{"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"},
        )
        assert status == 200, body
        assert [r["value"] for r in body["readings"]] == [4, 5]
        status, body = await get_json(f"{base}/api/v1/agents")
        assert status == 200, body
        assert [a["agent"] for a in body["agents"]] == [AGENT]
    # It left the schema as it found it: the old code applies no migration of its own.
    versions = count(postgres_fresh_url, "SELECT max(version) FROM schema_migrations")
    assert versions == available_migrations()[-1].version
