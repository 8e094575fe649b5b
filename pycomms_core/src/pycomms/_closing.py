"""Bounding the steps of a close: one step of a bus's close runs until a deadline, is
cancelled then, and is abandoned (logged) if it does not end when cancelled; so are the
tasks a loop still holds when its program ends (`run_bounded`, and `pycomms.sync`'s loops)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from .spi import CLOSE_BOUND, stop_tasks

log = logging.getLogger("pycomms")
T = TypeVar("T")

_abandoned: list[asyncio.Future[Any]] = []
"""Tasks abandoned at the end of a loop, kept so that none is destroyed pending (asyncio
would log that for each) once its loop is closed."""


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
    seconds (`cancel_leftovers`), as are async generators' cleanup and the default
    executor's threads. `asyncio.run` waits for each without end, so one handler that
    ignores its cancellation would keep the process from ever exiting."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            cancel_leftovers(loop)
            finish_on(loop, loop.shutdown_asyncgens(), "closing async generators")
            finish_on(loop, loop.shutdown_default_executor(), "the handlers' threads")
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """From outside ``loop``, which is not running: cancel the tasks still on it and let
    them end (so callers waiting for them get a cancellation), for at most `CLOSE_BOUND`
    seconds. A task that ignores its cancellation (a handler that catches it and goes
    on) is then named in an error and abandoned with the loop."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    stuck = loop.run_until_complete(stop_tasks(tasks, give_up_after=CLOSE_BOUND))
    if stuck:
        log.error(
            "%d task(s) still run %.1fs after they were cancelled at the end of their event loop; abandoning them: %s",
            len(stuck),
            CLOSE_BOUND,
            ", ".join(sorted(task.get_name() for task in stuck)),
        )
        _abandoned.extend(stuck)


def finish_on(loop: asyncio.AbstractEventLoop, step: Coroutine[Any, Any, None], what: str) -> None:
    """From outside ``loop``: run ``step`` on it for at most `CLOSE_BOUND` seconds, then
    abandon it with an error naming ``what``."""
    task = loop.create_task(step)
    loop.run_until_complete(asyncio.wait([task], timeout=CLOSE_BOUND))
    if not task.done():
        log.error("%s did not end within %.1fs at the end of their event loop; abandoning it", what, CLOSE_BOUND)
        _abandoned.append(task)
