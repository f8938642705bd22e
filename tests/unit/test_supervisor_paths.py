"""Supervisor paths beside the crash-and-restart cycle: late tasks, a second start, late timers."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shared.supervisor import Supervisor, TaskState


async def test_a_task_added_while_running_starts_at_once() -> None:
    started: dict[str, asyncio.Event] = {"early": asyncio.Event(), "late": asyncio.Event()}

    def task(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            started[name].set()
            await asyncio.Event().wait()

        return run

    sup = Supervisor("test")
    sup.add("early", task("early"))
    sup.start()
    await asyncio.wait_for(started["early"].wait(), 5)
    sup.add("late", task("late"))
    await asyncio.wait_for(started["late"].wait(), 5)
    assert [h.state for h in sup.health()] == [TaskState.RUNNING, TaskState.RUNNING]
    assert await sup.stop(5)
    assert [h.state for h in sup.health()] == [TaskState.STOPPED, TaskState.STOPPED]


async def test_a_second_start_runs_nothing_twice() -> None:
    runs = 0
    running = asyncio.Event()

    async def once() -> None:
        nonlocal runs
        runs += 1
        running.set()
        await asyncio.Event().wait()

    sup = Supervisor("test")
    sup.add("once", once)
    sup.start()
    sup.start()
    await asyncio.wait_for(running.wait(), 5)
    assert await sup.stop(5)
    assert runs == 1
    assert await sup.stop(5), "stopping again finds nothing to stop"


def watch_healthy_timer(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set each time a supervisor's "healthy again" timer has fired."""
    fired = asyncio.Event()
    steady = Supervisor._steady

    def observed(self: Supervisor, spec: object, started: float) -> None:
        steady(self, spec, started)  # type: ignore[arg-type]
        fired.set()

    monkeypatch.setattr(Supervisor, "_steady", observed)
    return fired


async def test_a_task_that_finishes_after_a_restart_stays_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timer_fired = watch_healthy_timer(monkeypatch)
    runs = 0

    async def crash_then_finish() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise OSError("first run fails")

    sup = Supervisor("test", backoff_initial=0.01, backoff_cap=0.01, healthy_after=0.05)
    sup.add("job", crash_then_finish)
    sup.start()
    # The second run started a timer to call it healthy; it fires after the run finished.
    await asyncio.wait_for(timer_fired.wait(), 5)
    [health] = sup.health()
    assert (health.state, health.restarts) == (TaskState.FINISHED, 1)
    assert health.last_error == "OSError: first run fails"
    assert sup.failing() == []
    assert await sup.stop(5)


async def test_a_failing_task_stopped_before_it_is_healthy_is_not_called_running_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timer_fired = watch_healthy_timer(monkeypatch)
    second_run = asyncio.Event()
    runs = 0

    async def crash_then_hang() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise OSError("first run fails")
        second_run.set()
        await asyncio.Event().wait()

    sup = Supervisor("test", backoff_initial=0.01, backoff_cap=0.01, healthy_after=0.2)
    sup.add("job", crash_then_hang)
    sup.start()
    await asyncio.wait_for(second_run.wait(), 5)
    assert await sup.stop(5)
    await asyncio.wait_for(timer_fired.wait(), 5)
    [health] = sup.health()
    assert health.state is TaskState.FAILING, "stopped while failing: its last known state"
    assert sup.failing() == ["job"]
