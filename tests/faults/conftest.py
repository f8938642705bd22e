"""Fixtures of the fault-injection suite: a whole plant per test, in separate processes."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.plant import Plant, create_database
from tests.servers import PostgresServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a fault test."""
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def plant_factory(postgres: PostgresServer, tmp_path: Path) -> Iterator[type[Plant]]:
    """Builds plants on the session's PostgreSQL (or another server); closes them after."""
    plants: list[Plant] = []

    class _Factory(Plant):
        def __init__(self, server: PostgresServer | None = None, **options: object) -> None:
            server = server or postgres
            database = f"fault_{uuid.uuid4().hex[:10]}"
            create_database(server, database)
            folder = tmp_path / database
            folder.mkdir()
            super().__init__(folder, server, database, **options)  # type: ignore[arg-type]
            plants.append(self)

    yield _Factory
    for plant in plants:
        plant.close()
