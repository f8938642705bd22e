"""A whole plant in separate processes, for fault injection: simulator, Mosquitto, PostgreSQL,
collector and agent, each startable, stoppable and killable on its own."""

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.servers import MosquittoServer, PostgresServer, free_port, wait_for_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


class Plant:
    """The real programs, wired together on free ports under one folder."""

    def __init__(
        self,
        root: Path,
        postgres: PostgresServer,
        database: str,
        *,
        buffer: dict[str, Any] | None = None,
        keepalive: str = "2s",
        broker_port: int | None = None,
        ingest: dict[str, Any] | None = None,
        collector_sections: dict[str, Any] | None = None,
        extra_tags: list[dict[str, Any]] | None = None,
    ) -> None:
        self.root = root
        self.postgres = postgres
        self.database_url = postgres.url(database)
        self.modbus_port = free_port()
        self.agent_http_port = free_port()
        self.broker = MosquittoServer(port=free_port())
        self.agent_broker_port = broker_port or self.broker.port
        self.prefix = "plant"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.buffer_path = root / "buffer.sqlite"
        (root / "agent.yaml").write_text(
            yaml.safe_dump(
                {
                    "agent": {
                        "id": "line1",
                        "heartbeat_interval": "1s",
                        "http_port": self.agent_http_port,
                    },
                    "buffer": {"path": str(self.buffer_path), **(buffer or {})},
                    "mqtt": {
                        "url": f"mqtt://127.0.0.1:{self.agent_broker_port}",
                        "topic_prefix": self.prefix,
                        "keepalive": keepalive,
                        "connect_timeout": "3s",
                    },
                    "forward": {
                        "publish_timeout": "2s",
                        "ack_timeout": "3s",
                        "retry_interval": "200ms",
                        "batch_max_readings": 500,
                    },
                    "devices": [
                        {
                            "type": "modbus",
                            "name": "press",
                            "host": "127.0.0.1",
                            "port": self.modbus_port,
                            "poll_interval": "100ms",
                            "timeout": "500ms",
                            "tags": [
                                {
                                    "name": "count",
                                    "table": "holding_register",
                                    "address": 2,
                                    "type": "uint32",
                                },
                                {
                                    "name": "speed",
                                    "table": "holding_register",
                                    "address": 6,
                                    "type": "int32",
                                },
                                {
                                    "name": "temp",
                                    "table": "input_register",
                                    "address": 0,
                                    "type": "float32",
                                },
                                *(extra_tags or []),
                            ],
                        }
                    ],
                }
            )
        )
        self.collector_ports: dict[int, int] = {}
        for index in (1, 2):
            self.collector_ports[index] = free_port()
            collector = {
                "database": {"url": self.database_url, "connect_timeout": "20s"},
                "mqtt": {
                    "url": self.broker.url,
                    "topic_prefix": self.prefix,
                    "client_id": f"collector-{index}",
                    "keepalive": "2s",
                },
                "http": {"port": self.collector_ports[index]},
                "ingest": {"group_max_delay": "50ms", "retry_interval": "200ms", **(ingest or {})},
                **(collector_sections or {}),
            }
            (root / f"collector{index}.yaml").write_text(yaml.safe_dump(collector))

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives with the child
        self.processes[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def start_simulator(self) -> None:
        """Start the PLC simulator (Modbus only)."""
        self._spawn(
            "simulator",
            [
                str(BIN / "plantwire-sim"),
                "--opcua-port",
                "0",
                "--modbus-port",
                str(self.modbus_port),
                "--tick",
                "0.1",
            ],
        )
        wait_for_port(self.modbus_port)

    def start_broker(self) -> None:
        """Start Mosquitto on its fixed port."""
        self.broker.start()

    def start_collector(self, index: int = 1) -> None:
        """Start collector 1 (named "collector") or 2 ("collector2"), in one shared group."""
        name = "collector" if index == 1 else f"collector{index}"
        config = self.root / f"collector{index}.yaml"
        self._spawn(name, [str(BIN / "plantwire-collector"), "run", "--config", str(config)])

    def collector_stored_batches(self, index: int) -> float:
        """Batches one collector stored, from its /metrics."""
        return self.collector_metric(index, "plantwire_collector_messages_total").get(
            'outcome="stored"', 0.0
        )

    def collector_metric(self, index: int, name: str) -> dict[str, float]:
        """One metric of a collector's /metrics page, by its label text ("" when it has none)."""
        url = f"http://127.0.0.1:{self.collector_ports[index]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            metric, _, labels = series.partition("{")
            if metric == name:
                values[labels.rstrip("}")] = float(value)
        return values

    def collector_url(self, index: int = 1) -> str:
        """Base URL of collector 1 or 2."""
        return f"http://127.0.0.1:{self.collector_ports[index]}"

    def collector_health(self, index: int = 1) -> tuple[int, str]:
        """Status code and body of a collector's /healthz."""
        url = f"http://127.0.0.1:{self.collector_ports[index]}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def start_agent(self) -> None:
        """Start the agent."""
        self._spawn(
            "agent",
            [str(BIN / "plantwire-agent"), "run", "--config", str(self.root / "agent.yaml")],
        )

    def start_neighbour(self, *args: str) -> None:
        """Start the garbage-publishing neighbour (tests/faults/neighbour.py) on this broker."""
        self._spawn(
            "neighbour",
            [
                sys.executable,
                "-m",
                "tests.faults.neighbour",
                "--url",
                self.broker.url,
                "--prefix",
                self.prefix,
                *args,
            ],
        )

    def kill(self, name: str) -> None:
        """SIGKILL a program (the broker included)."""
        if name == "broker":
            self.broker.kill()
            return
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self, name: str) -> None:
        """Stop a program cleanly."""
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        """Stop everything."""
        for name in list(self.processes):
            self.stop(name)
        self.broker.stop()

    # -- observation ----------------------------------------------------------------------

    def committed(self) -> int:
        """Readings the agent ever committed to its buffer (the last sequence number)."""
        rows = self._query_buffer("SELECT value FROM meta WHERE key = 'next_seq'")
        return int(rows[0][0]) - 1 if rows else 0

    def buffer_state(self) -> tuple[int, dict[str, int]]:
        """Readings still buffered, and the buffer's drop counters."""
        held = self._query_buffer("SELECT coalesce(sum(n), 0) FROM blocks")
        meta = dict(self._query_buffer("SELECT key, value FROM meta"))
        counts = {k: int(v) for k, v in meta.items() if k.startswith("dropped")}
        return (int(held[0][0]) if held else 0), counts

    def _query_buffer(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the buffer; none before the agent made its schema."""
        if not self.buffer_path.exists():
            return []
        try:
            with sqlite3.connect(f"file:{self.buffer_path}?mode=ro", uri=True, timeout=10) as conn:
                return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            # The file appears a moment before the agent's first transaction creates the tables.
            if "no such table" in str(exc):
                return []
            raise

    def agent_epoch(self) -> int:
        """The agent's buffer epoch (0 before the agent made its buffer)."""
        rows = self._query_buffer("SELECT value FROM meta WHERE key = 'epoch'")
        return int(rows[0][0]) if rows else 0

    def stored_seqs(self, agent: str = "line1") -> list[int]:
        """Sequence numbers of an agent's readings in PostgreSQL, with repeats."""
        try:
            with psycopg.connect(self.database_url, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT r.seq FROM readings r JOIN tags t USING (tag_id) WHERE t.agent_id = %s",
                    (agent,),
                ).fetchall()
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
            return []  # the database is down, or the collector has not migrated it yet
        return [row[0] for row in rows]

    def agent_metric(self, name: str) -> float:
        """Sum of one metric of the agent's /metrics page."""
        url = f"http://127.0.0.1:{self.agent_http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def order_violations(self) -> int:
        """Readings whose time goes backwards against their tag's sequence."""
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM (SELECT ts, lag(ts) OVER (PARTITION BY tag_id ORDER BY seq)"
                " AS before FROM readings) AS s WHERE ts < before"
            ).fetchone()
        return int(row[0]) if row else 0

    async def wait_until(self, check: Any, timeout: float, what: str) -> None:
        """Poll a condition (sync or async) until true."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-1500:] for p in self.root.glob("*.log")}
                raise AssertionError(f"timed out waiting for {what}; logs: {logs}")
            await asyncio.sleep(0.2)

    async def drain_and_check(self, *, policy: str | None = None) -> dict[str, int]:
        """Stop the PLC, let the agent deliver everything, then check exactly-once storage.

        Every committed reading is in PostgreSQL exactly once, unless the full-buffer `policy`
        dropped it (and counted it); per tag, time does not go backwards.
        """
        self.stop("simulator")
        last: tuple[int, int] = (-1, -1)
        since = time.monotonic()

        def settled() -> bool:
            nonlocal last, since
            # Handed over as well as committed, both still for a second: a reading handed
            # over waits up to buffer.commit_interval for its group commit, and is counted
            # as committed only then. (Handed counts from the agent's start; committed from
            # the buffer's, so they are compared with themselves, not with each other.)
            handed = int(self.agent_metric("plantwire_agent_device_buffered_readings_total"))
            held, _ = self.buffer_state()
            now = (handed, self.committed())
            if now != last or held:
                last, since = now, time.monotonic()
                return False
            return time.monotonic() - since >= 1.0

        await self.wait_until(settled, 90, "the agent's buffer to drain")
        handed = int(self.agent_metric("plantwire_agent_device_buffered_readings_total"))
        self.stop("agent")
        committed = self.committed()
        _, drops = self.buffer_state()
        expected_stored = committed - drops.get("dropped_oldest", 0)
        await self.wait_until(
            lambda: len(self.stored_seqs()) >= expected_stored,
            60,
            "the collector to store everything",
        )
        stored = self.stored_seqs()
        assert len(stored) == len(set(stored)), "a reading was stored twice"
        assert set(stored) <= set(range(1, committed + 1))
        if policy == "drop_oldest":
            assert len(stored) + drops["dropped_oldest"] == committed
        else:
            assert sorted(stored) == list(range(1, committed + 1)), "a committed reading is lost"
            assert drops["dropped_oldest"] == 0
        if policy != "drop_newest":
            assert drops["dropped_newest"] == 0
        assert self.order_violations() == 0
        return {"committed": committed, "stored": len(stored), "handed": handed, **drops}


def create_database(postgres: PostgresServer, name: str) -> None:
    """A fresh database on the server (the collector migrates it)."""
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
