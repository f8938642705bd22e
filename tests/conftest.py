"""Fixtures: real PostgreSQL and Mosquitto servers for the session, a fresh database per test."""

import asyncio
import io
import logging
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import Any

import psycopg
import pytest
import pytest_timeout

from collector.cli import run_migrations
from collector.config import CollectorConfig
from collector.pools import new_pool
from protocols.simulator.runner import Simulator
from shared.mqtt import MqttClient, MqttSettings
from tests.harness import add_test_key, collector_config, running_simulator
from tests.servers import MosquittoServer, PostgresServer, running_mosquitto, running_postgres

TEMPLATE = "plantwire_template"


def hang_report(interrupted: FrameType | None = None) -> str:
    """Every thread's stack, then every task of the event loop running here with its stack.

    `interrupted` is where a signal handler found this thread, shown instead of the handler.
    """
    out = io.StringIO()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    frames = sys._current_frames()
    if interrupted is not None:
        frames[threading.get_ident()] = interrupted
    for ident, frame in frames.items():
        out.write(f"---- thread {names.get(ident, '<unknown>')} ({ident}) ----\n")
        out.write("".join(traceback.format_stack(frame)))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        out.write("---- no asyncio event loop is running in this thread ----\n")
        return out.getvalue()
    tasks = sorted(asyncio.all_tasks(loop), key=lambda task: task.get_name())
    out.write(f"---- {len(tasks)} asyncio tasks of the running loop ----\n")
    for task in tasks:
        out.write(f"---- task {task.get_name()} ----\n")
        task.print_stack(file=out)
    return out.getvalue()


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Time tests out by SIGALRM like pytest-timeout, dumping asyncio tasks besides threads."""
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own timer thread, which ends the process

    def expire(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        if not settings.disable_debugger_detection and pytest_timeout.is_debugging():
            return
        terminal = item.config.get_terminal_writer()
        terminal.sep("+", title=f"Timeout after {settings.timeout:g}s: {item.nodeid}")
        terminal.write(hang_report(frame))
        terminal.sep("+", title="Timeout")
        pytest.fail(pytest_timeout.PYTEST_FAILURE_MESSAGE % settings.timeout)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    # pytest-timeout's pytest_timeout_cancel_timer calls this when the test ends.
    item.cancel_timeout = cancel  # type: ignore[attr-defined]
    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Programs' main() reconfigures logging; give every test the configuration it found."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server with a migrated template database."""
    with running_postgres() as server:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        asyncio.run(run_migrations(server.url(TEMPLATE)))
        with psycopg.connect(server.url(TEMPLATE), autocommit=True) as conn:
            add_test_key(conn)
        yield server


@pytest.fixture
def database_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield postgres.url(name)
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[Any]:
    """An open pool of the collector's kind on the test's database."""
    pool = new_pool(database_url, 3)
    await pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoServer]:
    """A Mosquitto broker shared by the session; tests keep apart by topic prefix."""
    with running_mosquitto() as server:
        yield server


@pytest.fixture
async def publisher(mosquitto: MosquittoServer, topic_prefix: str) -> AsyncIterator[MqttClient]:
    """An MQTT client on the session's broker, for publishing test payloads."""
    client = MqttClient(
        MqttSettings(url=mosquitto.url), client_id=f"{topic_prefix}-pub", persistent_session=False
    )
    await client.connect()
    yield client
    await client.close()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def plant_collector_config(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str
) -> Callable[..., CollectorConfig]:
    """Makes a collector configuration on this test's database, broker and topic prefix."""

    def make(sections: dict[str, Any] | None = None, **ingest: Any) -> CollectorConfig:
        return collector_config(
            database_url=database_url,
            mqtt_url=mosquitto.url,
            prefix=topic_prefix,
            client_id=f"{topic_prefix}-collector",
            sections=sections,
            **ingest,
        )

    return make


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """The PLC simulator serving OPC UA and Modbus on free ports."""
    async with running_simulator() as sim:
        yield sim


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, so it can be stopped."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_fresh_url(postgres: PostgresServer) -> Iterator[str]:
    """An empty database with no schema at all."""
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
