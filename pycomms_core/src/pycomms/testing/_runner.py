"""Running async scenarios strictly: a fresh loop per test, and any task leaked or
exception left unretrieved fails the test."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def scale() -> float:
    """Multiplier for every timeout, from ``$PYCOMMS_TEST_TIMEOUT_SCALE`` (default 1)."""
    try:
        return max(0.1, float(os.environ.get("PYCOMMS_TEST_TIMEOUT_SCALE", "1")))
    except ValueError:
        return 1.0


def run_strict(factory: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run ``factory()`` in a new event loop with a ``timeout`` (scaled).

    Fails if the loop reports an unhandled error (a task destroyed while pending, an
    exception never retrieved, a failing callback) or if tasks are left running.
    """
    problems: list[str] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        problems.append(f"{context.get('message')}: {exc!r}" if exc else str(context.get("message")))

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(handler)
        async with asyncio.timeout(timeout * scale()):
            result = await factory()
        current = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if leftovers:
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            problems.append(f"tasks left running after the scenario: {[t.get_name() for t in leftovers]}")
        gc.collect()
        return result

    with asyncio.Runner() as runner:
        result = runner.run(main())
        gc.collect()
    if problems:
        raise AssertionError("event loop problems:\n  " + "\n  ".join(problems))
    return result


class Recorder:
    """Counts what handlers saw and lets a test wait for a total.

    Create it inside the scenario's event loop; `add` may be called from handler
    threads (sync handlers) too.
    """

    def __init__(self) -> None:
        self.counts: Counter[Hashable] = Counter()
        self.items: list[Any] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def add(self, key: Hashable, item: Any = None) -> None:
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.add, key, item)
            return
        self.counts[key] += 1
        self.items.append(item if item is not None else key)
        total = len(self.items)
        for target, future in self._waiters:
            if total >= target and not future.done():
                future.set_result(None)

    @property
    def total(self) -> int:
        return len(self.items)

    async def wait(self, total: int, timeout: float) -> None:
        """Wait until at least ``total`` items were recorded."""
        if self.total >= total:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (total, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout * scale()):
                await future
        except TimeoutError:
            raise AssertionError(f"waited {timeout * scale():.1f}s for {total} deliveries, got {self.total}") from None
        finally:
            self._waiters.remove(entry)

    def assert_exactly_once(self, keys: Iterable[Hashable]) -> None:
        """Every key seen exactly once, nothing else seen."""
        expected = set(keys)
        missing = expected - set(self.counts)
        duplicates = {k: c for k, c in self.counts.items() if c > 1}
        unexpected = set(self.counts) - expected
        assert not missing, f"{len(missing)} never delivered, e.g. {sorted(map(str, missing))[:5]}"
        assert not duplicates, f"{len(duplicates)} delivered more than once, e.g. {list(duplicates.items())[:5]}"
        assert not unexpected, f"unexpected deliveries: {sorted(map(str, unexpected))[:5]}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it returns true (for state with no event to await, e.g. presence)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout * scale()
    while True:
        if await check():
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout * scale():.1f}s waiting for {what}")
        await asyncio.sleep(interval)
