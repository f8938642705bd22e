"""Cancellation that a library swallowed, raised again so a stopping task really stops."""

import asyncio


def raise_if_cancelled(cause: BaseException | None = None) -> None:
    """Raise CancelledError if this task was asked to stop and something swallowed it.

    On Python 3.11, `asyncio.wait_for` returns the result instead of raising when the
    cancellation and the awaited result arrive in the same loop iteration (CPython
    gh-86296; rewritten in 3.12). The drivers' libraries (pymodbus, asyncua) use it on every
    request, and a cancelled query can surface as a database error; either way a stop's one
    cancel can vanish and a loop would run on for ever. The request stays counted in
    `Task.cancelling()`, which this checks.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
