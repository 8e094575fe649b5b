"""Deadlines: every database call of a transport ends on time, even on a silent link.

A statement sent on a connection whose peer went silent (a host gone behind a firewall,
a stalled proxy: the socket stays open, no FIN, no RST) waits forever: neither asyncpg
nor asyncmy time reads out by default, and a cancellation can be lost in a driver (see
`_tasks`), so an ``asyncio.timeout`` around the statement is not enough on its own.
Each call therefore runs in a task of its own, which the caller stops waiting for at
the deadline; the task is cancelled (again, while it runs on: SQLAlchemy closes a
connection interrupted mid-statement) and abandoned after `ABANDON_AFTER` seconds if a
driver still holds on to it. Its connection is never returned to the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from pycomms import PyCommsError
from pycomms.spi import stop_tasks

from ._errors import describe

log = logging.getLogger("pycomms.sql")
T = TypeVar("T")

# Seconds a call cancelled at its deadline may take to end before it is abandoned.
ABANDON_AFTER = 1.0
# Seconds the polite steps of a close (wait for a claim, flush acks, release leases,
# leave presence) take at most together, before the connections are cut: core gives a
# transport `pycomms.spi.CLOSE_BOUND` (5 s) beyond the grace period for everything.
CLOSE_BUDGET = 2.0
# The same when the last call passed its deadline: the server is likely silent, and
# what is not released now is redelivered when its lease expires.
SILENT_CLOSE_BUDGET = 0.5

_abandoned: set[asyncio.Task[Any]] = set()


def _settled(task: asyncio.Task[Any]) -> None:
    """An abandoned call ended at last: forget it, and take its outcome (a lost link's
    error), which nobody awaits any more and asyncio would report as never retrieved."""
    _abandoned.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("an abandoned database call ended with %s", describe(exc))


class DeadlinePassed(TimeoutError):
    """`within` gave up waiting (a `TimeoutError` raised by the work itself is not one)."""


async def within(seconds: float, work: Coroutine[Any, Any, T]) -> T:
    """``await work``, or raise `DeadlinePassed` after ``seconds`` (work cancelled).

    A cancelled caller cancels ``work`` too and waits a little for it to end."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait((task,), timeout=seconds)
    except asyncio.CancelledError:
        await _stop(task)
        raise
    if not task.done():
        await _stop(task)
        if task.cancelled() or not task.done() or task.exception() is not None:
            raise DeadlinePassed
    return task.result()


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` until it ends, for at most `ABANDON_AFTER` seconds; keep a
    reference to one that did not end, so it is never destroyed while pending."""
    if task.done():  # it ended as the caller was cancelled: take its outcome all the same
        _settled(task)
        return
    _abandoned.add(task)
    task.add_done_callback(_settled)
    if await stop_tasks([task], recancel_after=0.1, give_up_after=ABANDON_AFTER):
        log.warning("a database call did not end when cancelled; abandoning it (%s)", task.get_coro())


class Deadlines:
    """The deadlines of one transport, and how their expiry and failures are worded:
    ``"postgresql: send to 127.0.0.1:5432 timed out after 2s (operation_timeout)"``."""

    def __init__(self, backend: str, where: str, connect_timeout: float, operation_timeout: float) -> None:
        self.backend = backend
        self.where = where
        self.connect_timeout = connect_timeout
        self.operation_timeout = operation_timeout
        self.lapsed = False
        """Whether the last call that ended passed its deadline: the server may be
        silent, and a close should cut its connections rather than say goodbye."""

    @property
    def close_budget(self) -> float:
        """Seconds for the polite steps of a close: `CLOSE_BUDGET`, or
        `SILENT_CLOSE_BUDGET` when the last call passed its deadline."""
        return SILENT_CLOSE_BUDGET if self.lapsed else CLOSE_BUDGET

    async def within(self, seconds: float, work: Coroutine[Any, Any, T]) -> T:
        """`within`, remembering in `lapsed` whether the deadline passed."""
        try:
            result = await within(seconds, work)
        except DeadlinePassed:
            self.lapsed = True
            raise
        self.lapsed = False
        return result

    def expired(self, what: str, seconds: float, option: str = "operation_timeout") -> str:
        """``what`` ends with a preposition: "send to", "listing nodes on"."""
        return f"{self.backend}: {what} {self.where} timed out after {seconds:g}s ({option})"

    def failed(self, what: str, exc: BaseException) -> str:
        return f"{self.backend}: {what} {self.where} failed: {describe(exc)}"

    async def run(
        self,
        what: str,
        error: type[PyCommsError],
        work: Coroutine[Any, Any, T],
        seconds: float | None = None,
        option: str = "operation_timeout",
    ) -> T:
        """``await work`` within ``seconds`` (default: operation_timeout); any failure
        leaves as ``error`` with a message naming the backend, the place and ``what``."""
        limit = self.operation_timeout if seconds is None else seconds
        try:
            return await self.within(limit, work)
        except PyCommsError:
            raise
        except DeadlinePassed:
            raise error(self.expired(what, limit, option)) from None
        except Exception as exc:
            raise error(self.failed(what, exc)) from exc
