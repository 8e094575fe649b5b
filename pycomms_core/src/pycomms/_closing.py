"""Bounding the steps of a close: one step of a bus's close runs until a deadline, is
cancelled then, and is abandoned (logged) if it does not end when cancelled; so are the
tasks a loop still holds when its program ends (`run_bounded`, and `pycomms.sync`'s loops)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from .spi import CLOSE_BOUND, stop_tasks

log = logging.getLogger("pycomms")
T = TypeVar("T")


async def finish_by(step: Coroutine[Any, Any, None], until: float, what: str) -> None:
    """Run ``step`` until ``until`` (loop time), then cancel it; one more second for it
    to end, then abandon it. Errors are logged: close never raises them."""
    task = asyncio.ensure_future(step)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait({task}, timeout=max(0.0, until - loop.time()))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        if await stop_tasks([task], give_up_after=1.0):
            log.error("bus close: %s did not end when cancelled; abandoning it", what)
        else:
            log.error("bus close: %s passed its deadline; cancelled it", what)
    elif not task.cancelled() and task.exception() is not None:
        log.error("bus close: %s failed", what, exc_info=task.exception())


def run_bounded(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a new event loop, as `asyncio.run` does, with a bounded end: the
    tasks still on the loop when ``main`` returns are cancelled and given `CLOSE_BOUND`
    seconds (`cancel_leftovers`), and so is the async generators' cleanup. `asyncio.run`
    waits for them without end, so one handler that ignores its cancellation would keep
    the process from ever exiting. (The default executor's threads are waited for as
    `asyncio.run` does: the interpreter joins them at exit anyway.)"""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            cancel_leftovers(loop)
            finish_on(loop, loop.shutdown_asyncgens(), "closing async generators")
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """From outside ``loop``, which is not running: cancel the tasks still on it and let
    them end (so callers waiting for them get a cancellation), for at most `CLOSE_BOUND`
    seconds in all. Each is cancelled before the loop runs again, as `asyncio.run` does,
    and again after a second if it runs on (a driver can swallow one cancellation); a
    task started meanwhile is cancelled in the next round. Errors they end with go to
    the loop's exception handler. A task still running at the bound (a handler that
    catches its cancellation and goes on) is named in an error and abandoned."""
    end = time.monotonic() + CLOSE_BOUND
    seen: set[asyncio.Task[Any]] = set()
    stuck: list[asyncio.Task[Any]] = []
    while not stuck:
        tasks = asyncio.all_tasks(loop) - seen
        if not tasks:
            break
        seen |= tasks
        for task in tasks:
            task.cancel()
        stuck = loop.run_until_complete(_wait_cancelled(tasks, end))
        _report_errors(loop, tasks)
    if stuck:
        log.error(
            "%d task(s) still run %.1fs after they were cancelled at the end of their event loop; abandoning them: %s",
            len(stuck),
            CLOSE_BOUND,
            ", ".join(sorted(task.get_name() for task in stuck)),
        )
        for task in stuck:
            _abandon(task)


async def _wait_cancelled(tasks: set[asyncio.Task[Any]], end: float) -> list[asyncio.Task[Any]]:
    """Wait until ``tasks`` (cancelled) have ended or ``end`` (monotonic) has passed,
    cancelling those still running every second; the ones still running at the end."""
    pending = {task for task in tasks if not task.done()}
    while pending and (left := end - time.monotonic()) > 0:
        _, pending = await asyncio.wait(pending, timeout=min(1.0, left))
        for task in pending:
            task.cancel()
    return list(pending)


def _report_errors(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception of a task cancelled at the end of its event loop",
                    "exception": task.exception(),
                    "task": task,
                }
            )


def finish_on(loop: asyncio.AbstractEventLoop, step: Coroutine[Any, Any, None], what: str) -> None:
    """From outside ``loop``: run ``step`` on it for at most `CLOSE_BOUND` seconds, then
    abandon it with an error naming ``what``."""
    task = loop.create_task(step)
    loop.run_until_complete(asyncio.wait([task], timeout=CLOSE_BOUND))
    if not task.done():
        log.error("%s did not end within %.1fs at the end of their event loop; abandoning it", what, CLOSE_BOUND)
        _abandon(task)


def _abandon(task: asyncio.Task[Any]) -> None:
    """Leave ``task`` pending with its closed loop. The error naming it was logged, so
    asyncio's own "Task was destroyed but it is pending!" (when it is collected) would
    only repeat it: that flag is the one asyncio clears for tasks it abandons itself."""
    task._log_destroy_pending = False  # type: ignore[attr-defined]
