"""Fixtures: real PostgreSQL and Mosquitto servers for the session, a fresh database per test."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from collector.cli import run_migrations
from protocols.simulator.runner import Simulator
from tests.harness import running_simulator
from tests.servers import MosquittoServer, PostgresServer, running_mosquitto, running_postgres

TEMPLATE = "plantwire_template"


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


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoServer]:
    """A Mosquitto broker shared by the session; tests keep apart by topic prefix."""
    with running_mosquitto() as server:
        yield server


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """The PLC simulator serving OPC UA and Modbus on free ports."""
    async with running_simulator() as sim:
        yield sim


@pytest.fixture
def postgres_fresh_url(postgres: PostgresServer) -> Iterator[str]:
    """An empty database with no schema at all."""
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
