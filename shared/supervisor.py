"""Long-running tasks under one supervisor: a crash is logged, counted and restarted with backoff.

Every task runs inside one `asyncio.TaskGroup`, so stopping the supervisor cancels and awaits
all of them, and none is ever left running unseen. A task that raises is not allowed to take
the others down: it is logged with its traceback (once per kind of failure), counted, and
started again after an exponential backoff. It counts as failing until it has run for
`healthy_after` seconds without crashing again, which health checks report.
"""

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from shared.backoff import Backoff
from shared.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

Restart = Literal["on_failure", "never"]


class TaskState(StrEnum):
    """Where a supervised task is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    FAILING = "failing"
    FINISHED = "finished"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class TaskHealth:
    """A supervised task's state for health checks and metrics."""

    name: str
    state: TaskState
    restarts: int
    last_error: str | None


@dataclass(slots=True)
class _Spec:
    name: str
    run: Callable[[], Awaitable[None]]
    restart: Restart
    backoff: Backoff
    state: TaskState = TaskState.PENDING
    restarts: int = 0
    last_error: str | None = None
    started: float = 0.0
    active: bool = False
    logged: set[str] = field(default_factory=set)


class Supervisor:
    """Runs named tasks in one TaskGroup and restarts those that crash."""

    def __init__(
        self,
        name: str,
        *,
        on_restart: Callable[[str], None] | None = None,
        backoff_initial: float = 1.0,
        backoff_cap: float = 30.0,
        healthy_after: float = 30.0,
    ) -> None:
        self._name = name
        self._on_restart = on_restart
        self._backoff = (backoff_initial, backoff_cap)
        self._healthy_after = healthy_after
        self._specs: dict[str, _Spec] = {}
        self._group: asyncio.TaskGroup | None = None
        self._root: asyncio.Task[None] | None = None

    def add(
        self, name: str, run: Callable[[], Awaitable[None]], *, restart: Restart = "on_failure"
    ) -> None:
        """Supervise `run()` as task `name`; starts now if the supervisor is running."""
        if name in self._specs:
            raise ValueError(f"a task named {name!r} is already supervised")
        spec = _Spec(name, run, restart, Backoff(*self._backoff))
        self._specs[name] = spec
        if self._group is not None:
            self._group.create_task(self._supervise(spec), name=name)

    def start(self) -> None:
        """Start every task added so far, and those added later, in a root task."""
        if self._root is None:
            self._root = asyncio.create_task(self._run(), name=f"{self._name}-supervisor")

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            for spec in self._specs.values():
                group.create_task(self._supervise(spec), name=spec.name)
            try:
                await asyncio.Event().wait()  # until cancelled by stop()
            finally:
                self._group = None

    async def stop(self, timeout: float) -> bool:
        """Cancel every task and wait up to `timeout` s; False (and a log line) if some hang."""
        root, self._root = self._root, None
        if root is None:
            return True
        root.cancel()
        done, _ = await asyncio.wait({root}, timeout=timeout)
        if not done:
            hung = [s.name for s in self._specs.values() if s.active]
            log.error(
                "%s: tasks %s did not stop within %.0f s", self._name, ", ".join(hung), timeout
            )
            return False
        with contextlib.suppress(asyncio.CancelledError):
            root.result()
        return True

    def health(self) -> list[TaskHealth]:
        """Each task's state, restarts and last error."""
        return [TaskHealth(s.name, s.state, s.restarts, s.last_error) for s in self._specs.values()]

    def failing(self) -> list[str]:
        """Names of the tasks that crashed and have not yet run steadily since."""
        return [h.name for h in self.health() if h.state is TaskState.FAILING]

    async def _supervise(self, spec: _Spec) -> None:
        spec.active = True
        try:
            while True:
                spec.started = time.monotonic()
                steady: asyncio.TimerHandle | None = None
                if spec.state is TaskState.FAILING:
                    steady = asyncio.get_running_loop().call_later(
                        self._healthy_after, self._steady, spec, spec.started
                    )
                else:
                    spec.state = TaskState.RUNNING
                try:
                    await spec.run()
                    raise_if_cancelled()  # a task that swallowed its cancel has not finished
                except Exception as exc:  # the whole point: one task's crash stays its own
                    if steady is not None:
                        steady.cancel()
                    self._crashed(spec, exc)
                    if spec.restart == "never":
                        return
                    await asyncio.sleep(spec.backoff.next_delay())
                    spec.restarts += 1
                    if self._on_restart is not None:
                        self._on_restart(spec.name)
                    continue
                spec.state = TaskState.FINISHED
                return
        finally:
            spec.active = False
            if spec.state in (TaskState.PENDING, TaskState.RUNNING):
                spec.state = TaskState.STOPPED

    def _steady(self, spec: _Spec, started: float) -> None:
        """The restarted task has run `healthy_after` seconds since `started`: healthy again."""
        # Not for a run that has ended since: stopped (inactive), finished, or crashed again.
        if spec.active and spec.state is TaskState.FAILING and spec.started == started:
            spec.state = TaskState.RUNNING
            spec.backoff.reset()
            log.info("%s: task %s is running again", self._name, spec.name)

    def _crashed(self, spec: _Spec, exc: Exception) -> None:
        if spec.state is not TaskState.FAILING:
            spec.logged.clear()
        spec.state = TaskState.FAILING
        spec.last_error = f"{exc.__class__.__name__}: {exc}"
        # Once per kind of failure in a streak: a task crashing in a loop must not flood logs.
        key = "".join(traceback.format_exception_only(exc))
        if key in spec.logged:
            log.debug("%s: task %s crashed again: %s", self._name, spec.name, spec.last_error)
            return
        spec.logged.add(key)
        what = "restarting with backoff" if spec.restart == "on_failure" else "not restarted"
        log.error("%s: task %s crashed (%s)", self._name, spec.name, what, exc_info=exc)
