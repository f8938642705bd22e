"""The suite's per-test time limit: a hanging test fails alone, showing what every thread and
every asyncio task was waiting for."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HANGING = """
import asyncio
import threading


def stuck(release: threading.Event) -> None:
    release.wait()


async def test_hangs() -> None:
    release = threading.Event()
    threading.Thread(target=stuck, args=(release,), name="stuck-worker", daemon=True).start()
    never = asyncio.Event()
    await asyncio.create_task(never.wait(), name="waiting-for-never")


def test_after_the_hang_runs() -> None:
    pass
"""


def test_a_hanging_test_fails_with_a_dump_of_every_thread_and_task(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANGING)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "--timeout",
            "2",
            "--rootdir",
            str(tmp_path),
            "-c",
            str(tmp_path / "pytest.ini"),
            str(tmp_path / "test_hang.py"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - started
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert elapsed < 60, f"the run took {elapsed:.0f}s"
    assert "Timeout (>2.0s) from pytest-timeout." in out
    # Every thread, the stuck one with the line it waits on, and the main thread.
    assert "---- thread stuck-worker" in out
    assert "in stuck\n    release.wait()" in out.split("---- thread stuck-worker")[1]
    assert "---- thread MainThread" in out
    # Every task of the loop with its stack: the test's own and the one it awaits.
    test_task, awaited = out.split("---- task waiting-for-never ----")
    assert "await asyncio.create_task(never.wait()" in test_task.split("asyncio tasks")[1]
    assert "Stack for <Task pending name='waiting-for-never'" in awaited
    assert "in wait\n    await fut" in awaited
    assert "1 failed, 1 passed" in out
