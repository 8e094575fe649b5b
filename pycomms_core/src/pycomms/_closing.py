"""Bounding one step of a bus's close: it runs until a deadline, is cancelled then,
and is abandoned (logged) if it does not end when cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .spi import stop_tasks

log = logging.getLogger("pycomms")


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
