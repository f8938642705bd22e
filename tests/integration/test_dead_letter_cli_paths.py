"""dead-letters show and replay --all from a shell, against real PostgreSQL."""

import json
from pathlib import Path

import psycopg
import pytest

from collector import dead_letter_cli
from tests.integration.test_dead_letters import cli, insert
from tests.servers import MosquittoServer

pytestmark = pytest.mark.integration


@pytest.fixture
def config_file(tmp_path: Path, database_url: str, mosquitto: MosquittoServer) -> str:
    path = tmp_path / "collector.yaml"
    path.write_text(f"database: {{url: '{database_url}'}}\nmqtt: {{url: '{mosquitto.url}'}}\n")
    return str(path)


def birth() -> bytes:
    return json.dumps(
        {
            "v": 1,
            "status": "online",
            "version": "1.2.0",
            "config_hash": "c0ffee",
            "devices": ["press"],
            "epoch": 3,
        }
    ).encode()


def quarantine(database_url: str, letters: list[tuple[str, str, bytes]]) -> list[int]:
    """Dead letters of status messages, as (agent, kind, payload); their ids."""
    with psycopg.connect(database_url) as conn:
        return [
            conn.execute(
                "INSERT INTO dead_letters (topic, payload, error, agent_id, kind, reason)"
                " VALUES (%s, %s, 'the database was read-only', %s, %s, 'store') RETURNING id",
                (f"plantwire/v1/{agent}/{kind}", payload, agent, kind),
            ).fetchone()[0]  # type: ignore[index]
            for agent, kind, payload in letters
        ]


def test_show_says_why_a_replay_failed(
    config_file: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = insert(database_url)
    status, out, _ = cli(capsys, "show", "--config", config_file, str(letters[7].id))
    assert status == 0
    assert "replay error:     still malformed\n" in out
    status, out, _ = cli(capsys, "show", "--config", config_file, str(letters[8].id))
    assert "replay error" not in out


def test_replay_all_goes_through_every_page_and_fails_if_any_still_fails(
    config_file: str,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli(capsys, "replay", "--config", config_file, "--all") == (
        0,
        "no dead letters to replay\n",
        "",
    )
    monkeypatch.setattr(dead_letter_cli, "MAX_LIMIT", 2)  # five letters: three pages
    agents = [f"press-{n}" for n in range(1, 5)]
    ids = quarantine(
        database_url,
        [(agent, "state", birth()) for agent in agents] + [("press-9", "heartbeat", b"{}")],
    )
    status, out, _ = cli(capsys, "replay", "--config", config_file, "--all")
    assert status == 1
    # One line per dead letter; a validation error may go on over more lines.
    lines = [line for line in out.splitlines() if line.split(":")[0].isdigit()]
    assert lines[:4] == [f"{i}: replayed" for i in ids[:4]]
    assert lines[4].startswith(f"{ids[4]}: still failing: invalid heartbeat")
    assert len(lines) == 5
    with psycopg.connect(database_url) as conn:
        online = conn.execute(
            "SELECT agent_id FROM agents WHERE status = 'online' ORDER BY agent_id"
        ).fetchall()
    assert [row[0] for row in online] == agents
