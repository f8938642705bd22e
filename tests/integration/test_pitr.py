"""Backups as docs/backup.md does them: a base backup taken while a collector ingests,
restored to a point in time from the WAL archive; and a logical dump restored elsewhere.

Batches travel the real path: published to Mosquitto, consumed and written by a collector.
"""

import asyncio
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from collector.migrate import available_migrations
from shared.mqtt import MqttClient
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.harness import collector_config, eventually, running_collector
from tests.servers import MosquittoServer, PostgresServer

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "backup"
AGENT = "pitr-agent"
EPOCH = 7
PER_BATCH = 4
TS = 1_790_000_000_000_000
GAP = timedelta(milliseconds=50)
"""Clear time between the last commit before the target and the first one after it."""


class Feeder:
    """Publishes numbered batches of one agent, as an agent's forwarder would."""

    def __init__(self, publisher: MqttClient, prefix: str) -> None:
        self._publisher = publisher
        self._topic = f"{prefix}/v1/{AGENT}/batch"
        self.sent: list[int] = []

    async def send(self, count: int) -> list[int]:
        """Publish `count` more batches; return their batch ids."""
        ids = []
        for _ in range(count):
            first = len(self.sent) * PER_BATCH + 1
            seqs = list(range(first, first + PER_BATCH))
            readings = [
                Reading("press", "temp" if seq % 2 else "count", DataType.FLOAT64, TS + seq, seq)
                for seq in seqs
            ]
            payload = encode_batch(AGENT, EPOCH, seqs, readings)
            await self._publisher.publish(self._topic, payload, timeout=5)
            self.sent.append(first)
            ids.append(first)
        return ids

    async def run(self, stop: asyncio.Event) -> None:
        """Keep publishing, a batch every 20 ms, until `stop` is set."""
        while not stop.is_set():
            await self.send(1)
            await asyncio.sleep(0.02)  # a steady trickle, not a wait for anything


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


async def stored_batches(url: str) -> int:
    rows = await asyncio.to_thread(query, url, "SELECT count(*) FROM batches")
    return int(rows[0][0])


async def all_stored(url: str, feeder: Feeder) -> None:
    async def done() -> bool:
        return await stored_batches(url) == len(feeder.sent)

    await eventually(done, timeout=20, what=f"{len(feeder.sent)} batches to be stored")


def run_script(server: PostgresServer, script: str, *args: str) -> list[str]:
    """Run a scripts/backup script as the cluster's owner, PostgreSQL's programs on PATH."""
    env = (
        f"PATH={server.bin}:{os.environ['PATH']}",
        "PGHOST=127.0.0.1",
        f"PGPORT={server.port}",
        "PGUSER=postgres",
    )
    try:
        done = server.run("env", *env, str(SCRIPTS / script), *args, timeout=60)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{script} failed ({exc.returncode}): {exc.stderr}") from exc
    return done.stdout.splitlines()


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def server_log(server: PostgresServer) -> str:
    log = server.root / "log"
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


@pytest.fixture
def servers() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A primary archiving its WAL with archive-wal.sh, and an empty server to restore into."""
    primary = PostgresServer()
    archive = primary.root / "archive"
    primary.options = (
        " -c fsync=off -c archive_mode=on -c track_commit_timestamp=on"
        f' -c "archive_command={SCRIPTS / "archive-wal.sh"} {archive} %p %f"'
    )
    restored = PostgresServer()
    try:
        primary.run("mkdir", str(archive), str(primary.root / "backups"))
        primary.start()
        yield primary, restored
    finally:
        restored.remove()
        primary.remove()


async def test_a_base_backup_taken_during_ingest_restores_to_a_point_in_time(
    servers: tuple[PostgresServer, PostgresServer],
    mosquitto: MosquittoServer,
    publisher: MqttClient,
    topic_prefix: str,
) -> None:
    primary, restored = servers
    archive, backups = primary.root / "archive", primary.root / "backups"
    query(primary.url(), "CREATE DATABASE plant")
    url = primary.url("plant")
    config = collector_config(
        database_url=url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
    )
    feeder = Feeder(publisher, topic_prefix)
    async with running_collector(config):  # migrates the database on start
        first_backup = (
            await asyncio.to_thread(run_script, primary, "base-backup.sh", str(backups))
        )[-1]

        stop = asyncio.Event()
        feeding = asyncio.create_task(feeder.run(stop))
        try:

            async def some_stored() -> bool:
                return await stored_batches(url) >= 5

            await eventually(some_stored, timeout=20, what="ingest to be under way")
            before = await stored_batches(url)
            backup = (await asyncio.to_thread(run_script, primary, "base-backup.sh", str(backups)))[
                -1
            ]
            during = await stored_batches(url) - before
            assert during > 0, "no batch was committed while the base backup ran"
            target_stored = len(feeder.sent) + 5

            async def more_stored() -> bool:
                return await stored_batches(url) >= target_stored

            await eventually(more_stored, timeout=20, what="ingest to go on after the backup")
        finally:
            stop.set()
            await asyncio.wait_for(feeding, timeout=10)
        await all_stored(url, feeder)
        before_target = list(feeder.sent)

        # The target lies between the last commit before it and the first after it, with a
        # gap on both sides far wider than the clock's microsecond steps.
        [(now,)] = await asyncio.to_thread(query, url, "SELECT clock_timestamp()")
        target: datetime = now + GAP / 2

        async def past_gap() -> bool:
            rows = await asyncio.to_thread(query, url, "SELECT clock_timestamp() > %s", now + GAP)
            return bool(rows[0][0])

        await eventually(past_gap, timeout=5, what="the server clock to pass the gap")
        after_target = await feeder.send(10)
        await all_stored(url, feeder)

        # Commit times (track_commit_timestamp) say which side of the target each batch is.
        committed = await asyncio.to_thread(
            query, url, "SELECT batch_id, pg_xact_commit_timestamp(xmin) <= %s FROM batches", target
        )
        assert sorted(b for b, early in committed if early) == before_target
        assert sorted(b for b, early in committed if not early) == after_target

        [(segment,)] = await asyncio.to_thread(
            query, url, "SELECT pg_walfile_name(pg_switch_wal())"
        )

        async def archived() -> bool:
            return segment in await asyncio.to_thread(listing, archive)

        await eventually(archived, timeout=20, what=f"WAL segment {segment} to be archived")
    await asyncio.to_thread(primary.stop)

    # Retention keeping one backup drops the first and the WAL only it needed.
    taken = sorted([Path(first_backup).name, Path(backup).name])
    assert await asyncio.to_thread(listing, backups) == taken
    segments_before = await asyncio.to_thread(listing, archive)
    await asyncio.to_thread(
        run_script, primary, "prune-backups.sh", str(backups), str(archive), "1"
    )
    assert await asyncio.to_thread(listing, backups) == [Path(backup).name]
    assert segments_before[0] not in await asyncio.to_thread(listing, archive)

    await asyncio.to_thread(
        run_script,
        restored,
        "restore-pitr.sh",
        backup,
        str(restored.data),
        str(archive),
        target.isoformat(),
    )
    try:
        await asyncio.to_thread(restored.start)

        async def promoted() -> bool:
            try:
                rows = await asyncio.to_thread(
                    query, restored.url("plant"), "SELECT NOT pg_is_in_recovery()"
                )
            except psycopg.OperationalError:
                return False
            return bool(rows[0][0])

        await eventually(promoted, timeout=30, what="the restored server to recover and promote")
    except (AssertionError, subprocess.SubprocessError) as exc:
        raise AssertionError(f"restore failed: {exc}\n{server_log(restored)}") from exc

    restored_url = restored.url("plant")
    versions = await asyncio.to_thread(
        query, restored_url, "SELECT version FROM schema_migrations ORDER BY version"
    )
    assert [v for (v,) in versions] == [m.version for m in available_migrations()]
    per_batch = await asyncio.to_thread(
        query,
        restored_url,
        "SELECT b.batch_id, b.readings, count(r.seq), count(DISTINCT r.seq)"
        " FROM batches b JOIN tags t ON t.agent_id = b.agent_id"
        " LEFT JOIN readings r ON r.tag_id = t.tag_id AND r.seq BETWEEN b.batch_id AND b.last_seq"
        " WHERE b.agent_id = %s GROUP BY b.batch_id, b.readings ORDER BY b.batch_id",
        AGENT,
    )
    assert [row[0] for row in per_batch] == before_target
    assert all(row[1:] == (PER_BATCH, PER_BATCH, PER_BATCH) for row in per_batch), per_batch
    [(readings, last_seq)] = await asyncio.to_thread(
        query, restored_url, "SELECT count(*), max(seq) FROM readings"
    )
    assert readings == len(before_target) * PER_BATCH
    assert last_seq == before_target[-1] + PER_BATCH - 1


def table_counts(url: str) -> dict[str, int]:
    """Rows in every table of the public schema (partitions and their parent alike)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        counts = {}
        for name in names:
            statement = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
            row = conn.execute(statement).fetchone()
            assert row is not None
            counts[name] = int(row[0])
        return counts


def dump_and_restore(server: PostgresServer, url: str, dump: Path, fresh: str) -> None:
    """The commands docs/backup.md gives: pg_dump -Fc, then pg_restore into a new database."""
    subprocess.run(
        [str(server.bin / "pg_dump"), "--format=custom", f"--file={dump}", url],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with psycopg.connect(server.url(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(fresh)))
    subprocess.run(
        [
            *(str(server.bin / "pg_restore"), "--exit-on-error", "--no-owner"),
            *("--single-transaction", f"--dbname={server.url(fresh)}", str(dump)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


async def test_a_logical_dump_restores_into_a_fresh_database(
    postgres: PostgresServer,
    database_url: str,
    mosquitto: MosquittoServer,
    publisher: MqttClient,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    config = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
    )
    feeder = Feeder(publisher, topic_prefix)
    async with running_collector(config):
        await feeder.send(6)
        await all_stored(database_url, feeder)

    fresh = f"restored_{topic_prefix.replace('-', '_')}"
    try:
        await asyncio.to_thread(
            dump_and_restore, postgres, database_url, tmp_path / "plantwire.dump", fresh
        )
        original = await asyncio.to_thread(table_counts, database_url)
        assert original["readings"] == 6 * PER_BATCH
        assert original["batches"] == 6
        assert await asyncio.to_thread(table_counts, postgres.url(fresh)) == original
        versions = "SELECT version, name FROM schema_migrations ORDER BY version"
        assert await asyncio.to_thread(query, postgres.url(fresh), versions) == query(
            database_url, versions
        )
    finally:
        await asyncio.to_thread(
            query, postgres.url(), f"DROP DATABASE IF EXISTS {fresh} WITH (FORCE)"
        )
