"""An agent whose stop hangs still lets the process exit, after a bounded wait."""

import asyncio

import pytest

from agent.cli import run_agent


class HangingService:
    """A service that starts, then never finishes stopping."""

    def __init__(self) -> None:
        self.started = False
        self.stop_cancelled = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stop_cancelled = True
            raise


async def test_a_hanging_stop_is_given_up_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, stop = HangingService(), asyncio.Event()
    task = asyncio.create_task(run_agent(service, stop, stop_timeout=0.2))
    await asyncio.sleep(0.05)
    assert service.started
    stop.set()
    await asyncio.wait_for(task, 5)
    assert service.stop_cancelled
    assert "did not stop within" in caplog.text
