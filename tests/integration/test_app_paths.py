"""A collector told not to migrate starts on the schema it finds."""

import psycopg
import pytest

from tests.harness import collector_config, get_json, running_collector
from tests.servers import MosquittoServer

pytestmark = pytest.mark.integration


async def test_a_collector_with_migrate_on_start_off_applies_no_migration(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "DELETE FROM schema_migrations WHERE version = (SELECT max(version)"
            " FROM schema_migrations) RETURNING version"
        ).fetchone()
    assert row is not None
    newest = row[0]
    config = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-collector",
        sections={"database": {"url": database_url, "migrate_on_start": False}},
    )
    async with running_collector(config) as base:
        status, body = await get_json(f"{base}/readyz")
        assert (status, body["status"]) == (200, "ready")
    with psycopg.connect(database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()]
    assert newest not in versions, "with migrations on, start-up would have applied it again"
