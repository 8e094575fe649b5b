"""Stopping background tasks even when a cancellation is lost on the way (why that
happens is explained once, at `pycomms.spi.stop_tasks`; asyncmy's connect is where it
bites here). Work that must not be cut short runs in tasks of its own, awaited through
`asyncio.shield`, so that such a loss cannot keep a caller running either.
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
