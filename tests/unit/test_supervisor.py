"""The supervisor restarts a crashed task with backoff, reports it failing, and stops all."""

import asyncio
import logging

import pytest

from shared.supervisor import Supervisor, TaskState
from tests.harness import eventually


async def test_a_crashing_task_is_logged_once_counted_restarted_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    restarts: list[str] = []
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise OSError("database or disk is full")
        healthy.set()
        await asyncio.Event().wait()

    async def steady() -> None:
        await asyncio.Event().wait()

    sup = Supervisor(
        "test",
        on_restart=restarts.append,
        backoff_initial=0.01,
        backoff_cap=0.02,
        healthy_after=0.2,
    )
    sup.add("flaky", flaky)
    sup.add("steady", steady)
    caplog.set_level(logging.DEBUG)
    sup.start()
    await asyncio.wait_for(healthy.wait(), 5)
    assert restarts == ["flaky"] * 3
    assert sup.failing() == ["flaky"]
    states = {h.name: h for h in sup.health()}
    assert states["steady"].state is TaskState.RUNNING
    assert states["flaky"].last_error == "OSError: database or disk is full"
    assert caplog.text.count("Traceback") == 1, "one traceback per kind of failure"

    async def recovered() -> bool:
        return not sup.failing()

    await eventually(recovered, timeout=5, what="the restarted task to count as healthy")
    assert "task flaky is running again" in caplog.text
    assert await sup.stop(timeout=5)
    assert {h.state for h in sup.health()} == {TaskState.STOPPED}


async def test_tasks_added_while_running_start_and_finished_ones_stay_finished() -> None:
    sup = Supervisor("test")
    sup.start()
    done = asyncio.Event()

    async def short() -> None:
        done.set()

    sup.add("short", short)
    await asyncio.wait_for(done.wait(), 5)

    async def finished() -> bool:
        return sup.health()[0].state is TaskState.FINISHED

    await eventually(finished, timeout=5, what="the task to finish")
    with pytest.raises(ValueError, match="already supervised"):
        sup.add("short", short)
    assert await sup.stop(timeout=5)
    assert await sup.stop(timeout=5), "stopping twice is harmless"


async def test_a_task_not_to_restart_stays_failing_and_a_hung_stop_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = Supervisor("test", backoff_initial=0.01)

    async def broken() -> None:
        raise RuntimeError("bug")

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(10)  # a cleanup that takes too long
                raise

    sup.add("broken", broken, restart="never")
    sup.add("stubborn", stubborn)
    sup.start()

    async def failed() -> bool:
        return sup.failing() == ["broken"]

    await eventually(failed, timeout=5, what="the broken task to fail")
    assert "not restarted" in caplog.text
    assert not await sup.stop(timeout=0.2)
    assert "tasks stubborn did not stop" in caplog.text
