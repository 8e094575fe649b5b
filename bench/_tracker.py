"""Counts handled messages strictly: each expected ``seq`` once, duplicates noted."""

from __future__ import annotations

import asyncio
import time


class Tracker:
    """Shared by a run's consumer (``hit``) and its driver (``wait``)."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, expected: int) -> None:
        """Expect ``seq`` 0..expected-1, each once."""
        self.expected = expected
        self.unique = 0
        self.duplicates = 0
        self.strays = 0
        self.finished_at = 0.0
        self.finished_cpu = 0.0
        self._seen = bytearray(expected)
        self._done = asyncio.Event()
        if expected == 0:
            self._done.set()

    def hit(self, seq: int) -> None:
        """Record one handled message; safe to call from the loop's thread only."""
        if not 0 <= seq < self.expected:
            self.strays += 1
            return
        if self._seen[seq]:
            self.duplicates += 1
            return
        self._seen[seq] = 1
        self.unique += 1
        if self.unique == self.expected:
            self.finished_at = time.perf_counter()
            self.finished_cpu = time.process_time()
            self._done.set()

    async def wait(self, timeout: float) -> bool:
        """True once every expected message was handled, False after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            return False
        return True
