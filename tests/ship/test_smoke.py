"""scripts/smoke.py, which CD runs against staging and production, against a real collector."""

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from collector.config import CollectorConfig
from tests.harness import TEST_KEY, running_collector
from tests.servers import free_port

pytestmark = pytest.mark.integration
SMOKE = Path(__file__).resolve().parents[2] / "scripts" / "smoke.py"


@pytest.fixture
async def collector(plant_collector_config: Callable[..., CollectorConfig]) -> AsyncIterator[str]:
    config = plant_collector_config()
    async with running_collector(config) as base:
        yield base


async def smoke(*args: str, key: str) -> tuple[int, str]:
    """Run the script as CD does (a bare interpreter, the key in the environment)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SMOKE),
        *args,
        env={**os.environ, "PLANTWIRE_SMOKE_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_every_check_passes_against_a_working_collector(collector: str) -> None:
    status, output = await smoke("--api", collector, "--ops", collector, key=TEST_KEY)
    assert status == 0, output
    assert output.count("ok   ") == 5
    assert "smoke: 0 of 5 checks failed" in output


async def test_a_key_the_collector_does_not_know_fails_the_keyed_read(collector: str) -> None:
    status, output = await smoke("--api", collector, "--wait", "0", key=f"pwk_0badc0de_{'x' * 32}")
    assert status == 1
    assert "FAIL GET /api/v1/tags with the key: a page: expected 200, got 401" in output
    assert "ok   healthz" in output
    assert "smoke: 1 of 5 checks failed" in output


async def test_nothing_listening_fails_every_check_once_the_wait_is_over() -> None:
    status, output = await smoke(
        "--api", f"http://127.0.0.1:{free_port()}", "--wait", "1", key=TEST_KEY
    )
    assert status == 1
    assert "smoke: 5 of 5 checks failed" in output
    assert "Connection refused" in output


async def test_no_key_is_refused_before_any_request() -> None:
    status, output = await smoke("--api", "http://127.0.0.1:1", key="")
    assert status == 1
    assert "set PLANTWIRE_SMOKE_KEY" in output
