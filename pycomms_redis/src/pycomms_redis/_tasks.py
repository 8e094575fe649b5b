"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(maybe_tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    A cancellation can be swallowed: on Python 3.11, redis-py's zero-timeout socket
    check (``asyncio.timeout(0)``) can turn a cancel that lands inside it into a
    ``TimeoutError`` it handles. So the cancel is repeated until the task is done.
    """
    tasks = [task for task in maybe_tasks if task is not None]
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.05)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a failure of a stopped task is not news
