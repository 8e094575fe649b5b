"""Stopping background tasks even when a cancellation is lost on the way.

On Python < 3.12, ``asyncio.wait_for`` returns the result instead of raising when the
cancellation of its task arrives in the same loop iteration as that result (CPython
gh-86296, fixed in 3.12 where ``wait_for`` is built on ``asyncio.timeout``). Drivers
use it around their connect (asyncmy does), so cancelling a loop while it opens a
pool connection can be swallowed: the loop goes on polling, and a ``close()`` that
cancelled it once and awaited it waits forever. `stop_task` cancels again until the
task has ended. Work that must not be cut short runs in tasks of its own, awaited
through `asyncio.shield`, so that such a loss cannot keep a caller running either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pycomms.spi import stop_tasks

from ._errors import describe

log = logging.getLogger("pycomms.sql")

# How long a cancelled task may take to end before it is cancelled again. Long enough
# for its own clean-up (one round trip), short enough that a lost cancellation only
# delays close() a little.
RECANCEL_AFTER = 0.5


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs on.

    The task's outcome is retrieved (and an unexpected error logged), so nothing is
    reported later as "never retrieved".
    """
    if task is None:
        return
    await stop_tasks([task], recancel_after=RECANCEL_AFTER)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("background task %s failed: %s", task.get_name(), describe(exc))
