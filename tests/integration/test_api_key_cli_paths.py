"""plantwire-collector api-key against real PostgreSQL: keys that expire, without migrating."""

from pathlib import Path

import pytest

from collector.cli import main as collector_main

pytestmark = pytest.mark.integration


def test_a_key_made_with_an_expiry_lists_it_and_no_migration_is_needed(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "collector.yaml"
    # The database is migrated already; with migrate_on_start off the command only uses it.
    config.write_text(
        f"database:\n  url: {database_url}\n  migrate_on_start: false\n"
        "mqtt:\n  url: mqtt://127.0.0.1:1\n"
    )
    argv = ["api-key", "create", "--config", str(config), "--name", "contractor"]
    argv += ["--role", "viewer", "--expires", "2099-01-31T08:00:00+01:00"]
    assert collector_main(argv) == 0
    prefix = capsys.readouterr().out.strip().splitlines()[-1].split("_")[1]
    assert collector_main(["api-key", "list", "--config", str(config)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(prefix))
    assert "2099-01-31T07:00:00.000000Z" in row.split()
    assert "yes" in row.split()
