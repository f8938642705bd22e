"""Schemathesis against a real collector process: every operation, with a valid key and without.

It must find no server error, no status code the contract does not document, no response
that breaks its schema, content type or documented headers, and no invalid input accepted.
Each run prints its seed; PLANTWIRE_CONTRACT_SEED=<seed> replays it.
"""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from collector.api.operations import API
from collector.api.routes import RESOURCES
from tests.harness import TEST_KEY
from tests.servers import MosquittoServer, PostgresServer, free_port, wait_for_port

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "unsupported_method",
    ]
)
EXAMPLES = 150
CONFIG = Path(__file__).with_name("schemathesis.toml")
assert RESOURCES  # every resource's operations are declared on API


@pytest.fixture(scope="module")
def collector_url(
    postgres: PostgresServer, mosquitto: MosquittoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A collector process over a database that holds a few readings, agents and dead letters."""
    name = f"contract_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE plantwire_template")
    folder = tmp_path_factory.mktemp("contract")
    port = free_port()
    config = folder / "collector.yaml"
    config.write_text(
        f"database:\n  url: {postgres.url(name)}\n"
        f"mqtt:\n  url: {mosquitto.url}\n  topic_prefix: contract-{name}\n"
        f"http:\n  host: 127.0.0.1\n  port: {port}\n"
        # Fuzzing sends thousands of requests with one key.
        "rate_limits:\n  enabled: false\n"
    )
    with (folder / "collector.log").open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "plantwire-collector"), "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with psycopg.connect(postgres.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def findings(result: subprocess.CompletedProcess[str]) -> str:
    """What a run found, for the assertion message: its failures section and summary."""
    out = result.stdout
    start = out.find("FAILURES")
    return (out[start : start + 8000] if start >= 0 else out[-6000:]) + result.stderr[-2000:]


def schemathesis(url: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run the schemathesis CLI over the collector's contract."""
    return subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/api/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            os.environ.get("PLANTWIRE_CONTRACT_SEED", str(int(time.time()) % 100_000)),
            "--request-timeout",
            "10",
            "--no-color",
            # The keys are ours to give, not to generate.
            "--generation-with-security-parameters",
            "false",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.timeout(360)
@pytest.mark.parametrize(
    "operations",
    [
        # Revoking is tested alone: following the listing's links, it would revoke the very
        # key the run uses, and every later request would be a 401. The event stream never
        # ends, so each of its requests would only time out: tests/integration/test_stream.py
        # covers it (the run without a key still checks it answers 401).
        ("--exclude-operation-id", "revoke_api_key", "--exclude-operation-id", "get_stream"),
        ("--include-operation-id", "revoke_api_key"),
    ],
    ids=["all-but-revoke", "revoke"],
)
def test_schemathesis_finds_nothing_with_a_valid_key(
    collector_url: str, operations: tuple[str, ...]
) -> None:
    result = schemathesis(collector_url, "-H", f"Authorization: Bearer {TEST_KEY}", *operations)
    assert result.returncode == 0, findings(result)
    # Each operation was reached with the key: none answered only 401 or 403.
    assert "Authentication failed" not in result.stdout, result.stdout[-4000:]


@pytest.mark.timeout(360)
def test_schemathesis_finds_nothing_without_a_key(collector_url: str) -> None:
    result = schemathesis(collector_url)
    assert result.returncode == 0, findings(result)
    operations = len(API.operations)
    assert f"{operations} operations returned only 401/403" in result.stdout, result.stdout[-4000:]
