"""Dead letters you can act on: the HTTP API, the CLI and retention, against real PostgreSQL."""

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import sql

from collector.cli import main as collector_main
from collector.config import CollectorConfig
from collector.dead_letters import expire_dead_letters
from tests.harness import get_json, running_collector
from tests.servers import MosquittoServer, free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AGENTS = ("press-1", "press-2", None)
KINDS = ("batch", "state", "heartbeat", "unknown")
REASONS = ("malformed", "timestamp", "schema", "version", "reading")


@dataclass(frozen=True, slots=True)
class Letter:
    """What the test inserted as one dead letter."""

    id: int
    agent: str | None
    kind: str
    reason: str
    received_at: datetime
    replayed: bool
    payload: bytes


def insert(database_url: str, count: int = 30) -> list[Letter]:
    """Dead letters of several agents, kinds, reasons and times, two at each moment.

    The last one is a partial batch with two refused readings.
    """
    letters = []
    with psycopg.connect(database_url) as conn:
        for i in range(count):
            agent, kind, reason = AGENTS[i % 3], KINDS[i % 4], REASONS[i % 5]
            received_at = T0 - timedelta(minutes=i // 2)  # pairs share a moment: ids break ties
            replayed = i % 7 == 0
            payload = bytes([i]) * (i + 1)
            batch = kind == "batch" and agent is not None
            row = conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, error, agent_id, kind,"
                " reason, epoch, batch_id, readings, replayed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    received_at,
                    f"plantwire/v1/{agent or 'bad agent'}/{kind}",
                    payload,
                    f"error number {i}: {reason}",
                    agent,
                    kind,
                    reason,
                    7 if batch else None,
                    i if batch else None,
                    i,
                    received_at + timedelta(hours=1) if replayed else None,
                ),
            ).fetchone()
            assert row is not None
            letters.append(Letter(row[0], agent, kind, reason, received_at, replayed, payload))
        conn.execute(
            "UPDATE dead_letters SET partial = true, readings = 2 WHERE id = %s", (letters[-1].id,)
        )
        conn.execute(
            "UPDATE dead_letters SET replay_error = 'still malformed' WHERE id = %s",
            (letters[7].id,),
        )
        conn.execute(
            "INSERT INTO dead_readings (dead_letter_id, idx, seq, reason, error) VALUES"
            " (%(id)s, 4, 104, 'timestamp', 'ts 1601-01-01 outside the window'),"
            " (%(id)s, 1, 101, 'reading', 'NaN where an integer belongs')",
            {"id": letters[-1].id},
        )
    return letters


def newest_first(letters: list[Letter], keep: Callable[[Letter], bool]) -> list[int]:
    ordered = sorted(letters, key=lambda letter: (letter.received_at, letter.id), reverse=True)
    return [letter.id for letter in ordered if keep(letter)]


@pytest.fixture
async def collector(plant_collector_config: Callable[..., CollectorConfig]) -> AsyncIterator[str]:
    config = plant_collector_config()
    # The seeded dead letters are months old: keep the collector's retention off them.
    database = config.database.model_copy(update={"dead_letter_days": None})
    async with running_collector(config.model_copy(update={"database": database})) as base:
        yield base


async def follow(base: str, **params: str) -> tuple[list[int], int]:
    """Every id a listing yields by following `next`; and how many pages it took."""
    status, body = await get_json(f"{base}/api/v1/dead-letters", **params)
    assert status == 200, body
    ids, pages = [item["id"] for item in body["items"]], 1
    while body["next"] is not None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(body["next"]).query).items()}
        assert {k: v for k, v in query.items() if k != "cursor"} == params, "filters kept"
        status, body = await get_json(f"{base}{urlsplit(body['next']).path}", **query)
        assert status == 200, body
        ids += [item["id"] for item in body["items"]]
        pages += 1
    return ids, pages


async def test_pages_follow_each_other_without_gaps_or_repeats(
    collector: str, database_url: str
) -> None:
    letters = insert(database_url)
    everything = newest_first(letters, lambda _: True)
    for limit in (1, 3, 4):  # odd limits end pages between two letters of the same moment
        ids, pages = await follow(collector, limit=str(limit))
        assert ids == everything, limit
        assert pages == -(-len(letters) // limit)
    ids, pages = await follow(collector, limit="30")
    assert (ids, pages) == (everything, 1)
    ids, _ = await follow(collector)  # the default limit covers them all
    assert ids == everything


FILTERS: list[tuple[dict[str, str], Callable[[Letter], bool]]] = [
    ({"agent": "press-1"}, lambda x: x.agent == "press-1"),
    ({"reason": "timestamp"}, lambda x: x.reason == "timestamp"),
    ({"kind": "heartbeat"}, lambda x: x.kind == "heartbeat"),
    ({"replayed": "true"}, lambda x: x.replayed),
    ({"replayed": "false"}, lambda x: not x.replayed),
    (
        {"from": "2026-03-01T11:55:00Z", "to": "2026-03-01T11:59:00+00:00"},
        lambda x: T0 - timedelta(minutes=5) <= x.received_at < T0 - timedelta(minutes=1),
    ),
    (
        {"agent": "press-2", "kind": "batch", "from": "2026-03-01T13:50:00+02:00"},
        lambda x: (
            x.agent == "press-2"
            and x.kind == "batch"
            and x.received_at >= T0 - timedelta(minutes=10)
        ),
    ),
    ({"agent": "nobody"}, lambda _: False),
]


async def test_filters_select_exactly_the_matching_dead_letters_on_every_page(
    collector: str, database_url: str
) -> None:
    letters = insert(database_url)
    for params, keep in FILTERS:
        expected = newest_first(letters, keep)
        ids, _ = await follow(collector, limit="3", **params)
        assert ids == expected, params
        assert expected or params == {"agent": "nobody"}, f"{params} selects nothing"


async def test_an_item_describes_its_dead_letter_and_the_detail_adds_payload_and_refusals(
    collector: str, database_url: str
) -> None:
    letters = insert(database_url)
    partial = letters[-1]
    status, body = await get_json(f"{collector}/api/v1/dead-letters", limit="2")
    assert status == 200
    # The newest two share a moment: the higher id comes first.
    assert body["items"] == [
        {
            "id": letters[1].id,
            "received_at": "2026-03-01T12:00:00Z",
            "topic": "plantwire/v1/press-2/state",
            "agent": "press-2",
            "kind": "state",
            "reason": "timestamp",
            "error": "error number 1: timestamp",
            "epoch": None,
            "batch": None,
            "readings": 1,
            "partial": False,
            "replayed_at": None,
            "replay_error": None,
            "payload_bytes": 2,
        },
        {
            "id": letters[0].id,
            "received_at": "2026-03-01T12:00:00Z",
            "topic": "plantwire/v1/press-1/batch",
            "agent": "press-1",
            "kind": "batch",
            "reason": "malformed",
            "error": "error number 0: malformed",
            "epoch": 7,
            "batch": 0,
            "readings": 0,
            "partial": False,
            "replayed_at": "2026-03-01T13:00:00Z",
            "replay_error": None,
            "payload_bytes": 1,
        },
    ]

    status, detail = await get_json(f"{collector}/api/v1/dead-letters/{partial.id}")
    assert status == 200
    assert base64.b64decode(detail["payload_base64"]) == partial.payload
    assert detail["payload_bytes"] == len(partial.payload)
    assert (detail["partial"], detail["readings"]) == (True, 2)
    assert detail["refused_readings"] == [
        {"idx": 1, "seq": 101, "reason": "reading", "error": "NaN where an integer belongs"},
        {"idx": 4, "seq": 104, "reason": "timestamp", "error": "ts 1601-01-01 outside the window"},
    ]
    status, detail = await get_json(f"{collector}/api/v1/dead-letters/{letters[1].id}")
    assert (status, detail["refused_readings"], detail["agent"]) == (200, [], "press-2")
    status, detail = await get_json(f"{collector}/api/v1/dead-letters/{letters[7].id}")
    assert (detail["replayed_at"], detail["replay_error"]) == (
        "2026-03-01T12:57:00Z",
        "still malformed",
    )

    status, problem = await get_json(f"{collector}/api/v1/dead-letters/{letters[-1].id + 1000}")
    assert status == 404
    assert problem["invalid_params"][0]["name"] == "id"


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("", {"cursor": "not-a-cursor"}, "cursor"),
        ("", {"cursor": base64.urlsafe_b64encode(b"12:-3").decode()}, "cursor"),
        ("", {"limit": "0"}, "limit"),
        ("", {"limit": "1001"}, "limit"),
        ("", {"from": "yesterday"}, "from"),
        ("", {"to": "2026-03-01T12:00:00"}, "to"),
        ("", {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
        ("", {"kind": "batches"}, "kind"),
        ("", {"replayed": "yes"}, "replayed"),
        ("/abc", {}, "id"),
        ("/0", {}, "id"),
        ("/99999999999999999999", {}, "id"),
    ],
)
async def test_bad_parameters_are_refused_with_a_problem_naming_them(
    collector: str, path: str, params: dict[str, str], name: str
) -> None:
    status, problem = await get_json(f"{collector}/api/v1/dead-letters{path}", **params)
    assert status == 400, problem
    assert problem["invalid_params"][0]["name"] == name


@pytest.fixture
def config_file(tmp_path: Path, database_url: str, mosquitto: MosquittoServer) -> str:
    path = tmp_path / "collector.yaml"
    path.write_text(f"database: {{url: '{database_url}'}}\nmqtt: {{url: '{mosquitto.url}'}}\n")
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = collector_main(["dead-letters", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def count_rows(database_url: str, table: str = "dead_letters") -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_cli_lists_pages_and_filters_as_a_table(
    config_file: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = insert(database_url)
    status, out, _ = cli(capsys, "list", "--config", config_file, "--agent", "press-1")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "RECEIVED", "AGENT", "KIND", "REASON", "READINGS", "ERROR"]
    expected = newest_first(letters, lambda x: x.agent == "press-1")
    assert [int(line.split()[0]) for line in lines[1:]] == expected
    assert all(line.split()[2] == "press-1" for line in lines[1:])
    assert "2026-03-01T12:00:00Z" in lines[1]

    status, out, _ = cli(capsys, "list", "--config", config_file, "--limit", "20")
    *rows, more = out.splitlines()[1:]
    assert more.startswith("more: --cursor ")
    status, out, _ = cli(
        capsys, "list", "--config", config_file, "--limit", "20", "--cursor", more.split()[-1]
    )
    rows += out.splitlines()[1:]
    assert [int(row.split()[0]) for row in rows] == newest_first(letters, lambda _: True)
    partial_row = next(row for row in rows if int(row.split()[0]) == letters[-1].id)
    assert "2 (partial)" in partial_row

    status, out, _ = cli(capsys, "list", "--config", config_file, "--reason", "none-such")
    assert (status, out) == (0, "no dead letters\n")
    status, _, err = cli(capsys, "list", "--config", config_file, "--cursor", "!!")
    assert status == 2
    assert "--cursor" in err
    with pytest.raises(SystemExit):
        cli(capsys, "list", "--config", config_file, "--from", "2026-03-01")
    assert "time zone" in capsys.readouterr().err


def test_cli_shows_one_dead_letter_with_its_payload(
    config_file: str, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = insert(database_url)[-1]
    status, out, _ = cli(capsys, "show", "--config", config_file, str(partial.id))
    assert status == 0
    assert f"error:            error number 29: {partial.reason}" in out
    assert "#1 seq 101 reading: NaN where an integer belongs" in out
    encoded = out.split("base64):\n", 1)[1]
    assert base64.b64decode("".join(encoded.split())) == partial.payload

    raw = tmp_path / "payload.bin"
    status, out, _ = cli(
        capsys, "show", "--config", config_file, str(partial.id), "--raw", str(raw)
    )
    assert status == 0
    assert raw.read_bytes() == partial.payload
    assert "base64" not in out

    status, _, err = cli(capsys, "show", "--config", config_file, str(partial.id + 1))
    assert status == 1
    assert f"no dead letter {partial.id + 1}" in err


def test_cli_purge_counts_without_yes_and_deletes_with_it(
    config_file: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = insert(database_url)
    before = "2026-03-01T11:50:00Z"
    older = [x for x in letters if x.received_at < T0 - timedelta(minutes=10)]
    older_press_2 = [x for x in older if x.agent == "press-2"]
    assert 0 < len(older_press_2) < len(older)

    argv = ("purge", "--config", config_file, "--before", before, "--agent", "press-2")
    status, out, _ = cli(capsys, *argv)
    assert (status, out) == (
        0,
        f"would delete {len(older_press_2)} dead letter(s); run again with --yes to delete them\n",
    )
    assert count_rows(database_url) == len(letters)
    status, out, _ = cli(capsys, *argv, "--yes")
    assert (status, out) == (0, f"deleted {len(older_press_2)} dead letter(s)\n")
    status, out, _ = cli(capsys, "purge", "--config", config_file, "--before", before, "--yes")
    assert out == f"deleted {len(older) - len(older_press_2)} dead letter(s)\n"
    assert count_rows(database_url) == len(letters) - len(older)

    status, out, _ = cli(
        capsys, "purge", "--config", config_file, "--id", str(letters[0].id), "--yes"
    )
    assert out == "deleted 1 dead letter(s)\n"
    assert count_rows(database_url) == len(letters) - len(older) - 1

    with pytest.raises(SystemExit):
        cli(capsys, "purge", "--config", config_file, "--yes")  # neither --id nor --before
    assert "one of the arguments --id --before is required" in capsys.readouterr().err


def test_cli_says_when_the_database_cannot_be_reached(
    tmp_path: Path, mosquitto: MosquittoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(
        f"database: {{url: 'postgresql://postgres@127.0.0.1:{free_port()}/x',"
        f" connect_timeout: 1s}}\nmqtt: {{url: '{mosquitto.url}'}}\n"
    )
    status, _, err = cli(capsys, "list", "--config", str(path))
    assert status == 1
    assert err.startswith("plantwire-collector: database: ")


async def test_retention_expires_old_dead_letters_and_their_refused_readings(
    database_url: str,
) -> None:
    insert(database_url)
    assert count_rows(database_url, "dead_readings") == 2  # they must go with their letter
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE dead_letters SET received_at = now() - interval '20 days'"
            " WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT 5)"
        )
        await conn.execute(
            "UPDATE dead_letters SET received_at = now() - interval '31 days'"
            " WHERE id NOT IN (SELECT id FROM dead_letters ORDER BY id LIMIT 5)"
        )
        assert await expire_dead_letters(conn, 30) == 25
        assert await expire_dead_letters(conn, 30) == 0
        assert await expire_dead_letters(conn, 19) == 5
    assert count_rows(database_url) == 0
    assert count_rows(database_url, "dead_readings") == 0
