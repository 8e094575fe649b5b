"""Delayed retries: a sorted set scored by due time (server clock), moved back to the
services' streams by whichever consuming node looks first."""

from __future__ import annotations

import asyncio
import logging

from redis import exceptions as rex
from redis.asyncio import Redis

from ._errors import describe
from ._keys import Keys
from ._scripts import MOVE_DUE

log = logging.getLogger("pycomms.redis")
_POLL = 1.0
"""Longest sleep between looks, so retries scheduled by other nodes are not late by more."""


class DelayedMover:
    """Moves due retries; wakes early when this node schedules one."""

    def __init__(self, client: Redis, keys: Keys, max_batch: int) -> None:
        self._move = client.register_script(MOVE_DUE)
        self._key = keys.delayed
        self._max_batch = max_batch
        self._wake = asyncio.Event()
        self._due_at: float | None = None

    def scheduled(self, delay: float) -> None:
        """A retry was scheduled ``delay`` seconds from now by this node."""
        due = asyncio.get_running_loop().time() + delay
        if self._due_at is None or due < self._due_at:
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            # Reset before the look: a retry scheduled while it runs triggers another one.
            self._wake.clear()
            self._due_at = None
            try:
                moved, wait_ms = await self._move(keys=[self._key], args=[self._max_batch])
                failures = 0
                if int(moved) >= self._max_batch:
                    continue
                wait = _POLL if int(wait_ms) < 0 else min(int(wait_ms) / 1000, _POLL)
            except (rex.RedisError, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("moving delayed retries failed: %s", describe(exc))
                wait = min(0.1 * 2**failures, 2.0)
            self._due_at = loop.time() + wait
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
