"""Deadlines: every call to the server ends in time, with an error that names the
backend, the server (host:port, never a secret), the operation and the deadline.

redis-py bounds each reply by ``socket_timeout``, but a call may take several replies
and retries through connection errors; these helpers bound the whole call. The work
runs in its own task so that the caller returns on time even when the driver swallows
a cancellation (see `pycomms_redis._tasks`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis import exceptions as rex

from pycomms import ConnectError, OperationError, PyCommsError
from pycomms.spi import stop_tasks

from ._errors import TRANSIENT, describe

log = logging.getLogger("pycomms.redis")
T = TypeVar("T")

CLOSE_STEP = 1.5
"""Seconds each network step of closing (flush, release, leave presence) may take; the
receivers' and the transport's steps together stay within `pycomms.spi.CLOSE_BOUND`."""
SILENT_CLOSE_STEP = 0.25
"""What a close step gets once an earlier one found the server silent."""
_WARN_EVERY = 10.0


def server_of(url: str) -> str:
    """``host:port`` of a Redis URL (no user, no password, no database)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or 6379
    except ValueError:
        return "<unparseable url>"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run_within(coro: Coroutine[Any, Any, T], seconds: float) -> T:
    """The result of ``coro``, run as a task; `TimeoutError` after ``seconds``, when
    the task is cancelled (and given half a second to end, then abandoned)."""
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(seconds, 0.0))
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise
    if not done:
        if await stop_tasks([task], recancel_after=0.05, give_up_after=0.5):
            task.add_done_callback(_retrieve)
        raise TimeoutError
    return task.result()


class Deadlines:
    """The deadlines of one transport and the errors that report them."""

    def __init__(self, server: str, connect_timeout: float, operation_timeout: float) -> None:
        self.server = server
        self.connect_timeout = connect_timeout
        self.operation_timeout = operation_timeout
        self._warned_at = -_WARN_EVERY

    def _say_retrying(self, operation: str, exc: BaseException) -> None:
        # One warning per outage (every call during it fails alike), the rest at debug level.
        now = asyncio.get_running_loop().time()
        quiet = now - self._warned_at < _WARN_EVERY
        if not quiet:
            self._warned_at = now
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "%s %s failed (%s); retrying until the deadline", operation, self.server, describe(exc))

    def expired(self, error: type[PyCommsError], operation: str, last: BaseException | None = None) -> PyCommsError:
        """``error`` for ``operation`` (e.g. ``"publish to"``) having passed its deadline."""
        seconds, option = (
            (self.connect_timeout, "connect_timeout")
            if error is ConnectError
            else (self.operation_timeout, "operation_timeout")
        )
        tail = f"; last error: {describe(last)}" if last is not None else "; the server did not answer"
        return error(f"redis: {operation} {self.server} timed out after {seconds}s ({option}){tail}")

    def failed(self, error: type[PyCommsError], operation: str, exc: BaseException) -> PyCommsError:
        if isinstance(exc, rex.AuthenticationError | rex.AuthenticationWrongNumberOfArgsError):
            return error(f"redis: {operation} {self.server} failed: authentication refused ({describe(exc)})")
        return error(f"redis: {operation} {self.server} failed: {describe(exc)}")

    async def connect(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run the connect ``step`` within ``connect_timeout``; raise `ConnectError`."""

        async def attempt() -> T:
            try:
                return await step()
            except rex.TimeoutError as exc:  # no reply within socket_timeout
                raise ConnectError(f"redis: connect to {self.server} timed out ({describe(exc)})") from None
            except (rex.RedisError, OSError) as exc:
                raise self.failed(ConnectError, "connect to", exc) from None

        try:
            return await run_within(attempt(), self.connect_timeout)
        except TimeoutError:
            raise self.expired(ConnectError, "connect to") from None

    async def call(
        self,
        operation: str,
        step: Callable[[], Awaitable[T]],
        *,
        error: type[PyCommsError] = OperationError,
        deadline: float | None = None,
    ) -> T:
        """Run ``step`` until it succeeds, again after connection errors (with backoff),
        until ``deadline`` (loop time; default: ``operation_timeout`` from now).

        ``step`` must be safe to repeat: a reply lost with its connection means the
        server may have run it already.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + self.operation_timeout if deadline is None else deadline
        last: list[BaseException] = []

        async def attempts() -> T:
            delay = 0.05
            while True:
                try:
                    return await step()
                except TRANSIENT as exc:
                    if not last:
                        self._say_retrying(operation, exc)
                    last[:] = [exc]
                    if loop.time() >= end:
                        raise self.expired(error, operation, exc) from None
                    await asyncio.sleep(min(delay, end - loop.time()))
                    delay = min(delay * 2, 1.0)
                except rex.RedisError as exc:
                    raise self.failed(error, operation, exc) from exc

        try:
            return await run_within(attempts(), end - loop.time())
        except TimeoutError:
            raise self.expired(error, operation, last[0] if last else None) from None


class CloseSteps:
    """Bounds the network steps of closing; shared by a transport and its receivers.
    Close never raises: a step that fails or passes its bound is logged (with what the
    failure means) and closing goes on. Once a step found the server silent, the next
    ones get `SILENT_CLOSE_STEP`: a close on a dead link takes little more than one step.
    """

    def __init__(self) -> None:
        self.silent = False

    def bound(self) -> float:
        return SILENT_CLOSE_STEP if self.silent else CLOSE_STEP

    async def run(self, what: str, consequence: str, coro: Coroutine[Any, Any, Any]) -> bool:
        """Run ``coro``; False (and a warning naming ``what`` and its ``consequence``) if it failed."""
        seconds = self.bound()
        try:
            await run_within(coro, seconds)
        except TimeoutError:
            self.silent = True
            log.warning("closing: %s took over %.2fs, given up; %s", what, seconds, consequence)
            return False
        except (rex.RedisError, OSError, PyCommsError) as exc:
            log.warning("closing: %s failed (%s); %s", what, describe(exc), consequence)
            return False
        return True


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
