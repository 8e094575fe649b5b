"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from pycomms.spi import stop_tasks

log = logging.getLogger("pycomms.redis")


async def cancel_and_wait(maybe_tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again while
    one runs on (a driver can swallow a cancellation: why is explained once, at
    `pycomms.spi.stop_tasks`), for at most a second: a task still running then is
    abandoned, with an error in the log."""
    stuck = await stop_tasks(maybe_tasks, recancel_after=0.05, give_up_after=1.0)
    if stuck:
        log.error("%d task(s) did not end when cancelled; abandoned: %s", len(stuck), [t.get_name() for t in stuck])
