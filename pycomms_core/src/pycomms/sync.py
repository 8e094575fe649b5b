"""The blocking API: ``with pycomms.sync.connect(url, services=[...]) as bus: bus.publish(...)``.

For code that is not an asyncio program: a Django or Flask view, a management command,
a cron script, a notebook, a threaded WSGI worker. `Bus` here is the twin of
`pycomms.Bus` with the same methods, semantics and errors, each call blocking until the
async call it stands for has finished.

How it works: every `Bus` owns one event loop, run by one background thread that the
bus starts when it connects and stops when it closes. A call hands its coroutine to
that loop (`asyncio.run_coroutine_threadsafe`) and waits for the result, so any number
of threads may call one bus at once. Services given to `connect` run their handlers on
that loop (sync handlers in worker threads, as with the async bus).

After ``fork()`` (a pre-forking server, ``multiprocessing`` with the ``fork`` start
method) the child inherits a copy of the bus but not its thread. The child never
touches the parent's loop or sockets (the parent's connection goes on undisturbed):
the child's first call opens a fresh connection with the same URL, services and name
(a new node in presence, with the child's pid), on a loop and thread of its own. A
serving bus therefore serves in a child only once the child has used it: open serving
buses after the fork (or call `Bus.reopen_after_fork` in a post-fork hook).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import FrameType, TracebackType
from typing import Any, TypeVar

from ._bus import DEFAULT_GRACE
from ._bus import Bus as AsyncBus
from ._closing import cancel_leftovers, finish_on
from ._connect import connect as async_connect
from ._errors import BusClosed
from ._messages import Command, Event, Message, Request
from ._service import Service
from .spi import CLOSE_BOUND, Capabilities, DeadLetter, NodeInfo

__all__ = ["Bus", "connect"]

log = logging.getLogger("pycomms")
R = TypeVar("R", bound=Message)
T = TypeVar("T")

EXECUTOR_BOUND = 1.0
"""Seconds `Bus.close` waits, after the async close, for the handler threads to end."""
STOP_BOUND = 2 * CLOSE_BOUND + EXECUTOR_BOUND + 1.0
"""Seconds `Bus.close` waits for its loop thread to end once the loop is told to stop:
the leftover tasks' and async generators' bounds, the handler threads' bound, and a
second to spare."""
_open_buses: set[Bus] = set()
"""Every open bus, held until it is closed: one dropped without `close` still runs its
loop thread, so it is closed at interpreter exit instead of being cut off there."""
_inherited: list[object] = []
"""In a forked child: the parent's loops and buses, kept unreachable-but-alive so that
no finalizer of theirs runs here (it would act on the parent's connections)."""


def connect(
    url: str | None = None, *, services: Iterable[Service] = (), name: str | None = None, **options: Any
) -> Bus:
    """Connect to a backend and return an open, blocking `Bus`; use it as
    ``with pycomms.sync.connect(...) as bus:`` or call ``bus.close()`` when done.

    Arguments as for `pycomms.connect`; errors too (`ConfigError`, `BackendNotFound`,
    `ConnectError`), raised in the calling thread.
    """
    return Bus(url, services=services, name=name, **options)


class _Runtime:
    """One event loop and the thread that runs it, in the process that started them."""

    def __init__(self, label: str) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        # the sync handlers' threads, in an executor of our own so that close can bound
        # its wait for them (the loop's own shutdown_default_executor joins unbounded)
        self.executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix=f"pycomms-handler-{label}")
        self.loop.set_default_executor(self.executor)
        self.thread = threading.Thread(target=self._run, name=f"pycomms-sync-{label}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                cancel_leftovers(self.loop)
                finish_on(self.loop, self.loop.shutdown_asyncgens(), "closing async generators")
                _shutdown_executor(self.executor)
            finally:
                self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Stop the loop (what still runs on it is cancelled) and wait a bounded time
        for its thread: a handler that blocks the loop itself (a blocking call in an
        ``async def``) is left to finish on the thread, a daemon, with an error logged."""
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            pass  # closed between the check and the call
        if threading.current_thread() is not self.thread:
            self.thread.join(STOP_BOUND)
            if self.thread.is_alive():
                log.error(
                    "pycomms.sync: the event loop thread %s did not stop within %.1fs (something blocks the loop, "
                    "e.g. a blocking call in an async handler); it is left to finish",
                    self.thread.name,
                    STOP_BOUND,
                )


def _shutdown_executor(executor: concurrent.futures.ThreadPoolExecutor) -> None:
    """Wait a bounded time for the sync handlers' threads. One may still run past its
    grace (a thread cannot be cancelled), or be the very thread that called `close`
    (a sync handler closing its own bus): waiting for it would never end."""
    waiter = threading.Thread(target=executor.shutdown, name="pycomms-handlers-shutdown", daemon=True)
    waiter.start()
    waiter.join(EXECUTOR_BOUND)
    if waiter.is_alive():
        log.warning("pycomms.sync: a sync handler's thread still runs after close; it is left to finish")


class Bus:
    """A blocking connection to one backend, serving zero or more services.

    Made by `pycomms.sync.connect`; every method may be called from any thread except
    the bus's own loop thread (an ``async`` handler of one of its services: use its
    ``ctx`` or the async bus there). Closed once, it stays closed: every call then
    raises `BusClosed`.
    """

    def __init__(
        self, url: str | None = None, *, services: Iterable[Service] = (), name: str | None = None, **options: Any
    ) -> None:
        self._args = (url, list(services), name, options)
        self._lock = threading.Lock()
        self._closed = False
        self._wakers: set[threading.Event] = set()
        self._runtime, self._bus = self._start()
        _open_buses.add(self)

    def _start(self) -> tuple[_Runtime, AsyncBus]:
        url, services, name, options = self._args
        opener = async_connect(url, services=services, name=name, **options)  # config errors raise here
        runtime = _Runtime(name or "+".join(s.name for s in services) or "client")
        try:
            bus = runtime.submit(_open(opener)).result()
        except BaseException:
            runtime.stop()
            raise
        return runtime, bus

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<pycomms.sync.Bus {self._bus.url!r} node={self._bus.node.id} {state}>"

    def __enter__(self) -> Bus:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # properties of the async bus --------------------------------------------------------

    @property
    def node(self) -> NodeInfo:
        """This node as others see it in presence (in a forked child: the child's own,
        opened now if it was not yet)."""
        if self._runtime.pid != os.getpid() and not self._closed:
            self.reopen_after_fork()
        return self._bus.node

    @property
    def url(self) -> str:
        """The backend URL, with secrets redacted."""
        return self._bus.url

    @property
    def namespace(self) -> str:
        return self._bus.namespace

    @property
    def capabilities(self) -> Capabilities:
        return self._bus.capabilities

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def unsent(self) -> int:
        """As `pycomms.Bus.unsent`: after `close`, messages lost from memory."""
        return self._bus.unsent

    @property
    def max_message_size(self) -> int:
        return self._bus.max_message_size

    # calls ---------------------------------------------------------------------------------

    def publish(self, *events: Event, key: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Publish events (fan-out); returns once the backend accepted all of them."""
        self._call(lambda bus: bus.publish(*events, key=key, headers=headers))

    def send(self, *commands: Command, key: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Send commands to the one service that handles each; returns once accepted."""
        self._call(lambda bus: bus.send(*commands, key=key, headers=headers))

    def request(self, request: Request[R], *, timeout: float, headers: dict[str, str] | None = None) -> R:
        """Send a request and wait for its typed reply: `RequestTimeout` when none came
        within ``timeout`` seconds, `RemoteError` when the handler failed for good."""
        return self._call(lambda bus: bus.request(request, timeout=timeout, headers=headers))

    def nodes(self) -> list[NodeInfo]:
        """Every live node on this backend and namespace, this one included."""
        return self._call(lambda bus: bus.nodes())

    def dead_letters(self, service: str | Service, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``service``, oldest first."""
        return self._call(lambda bus: bus.dead_letters(service, limit))

    def replay(self, service: str | Service, ids: Sequence[str] | None = None) -> int:
        """Send dead letters back to ``service`` with a fresh attempt count; how many."""
        return self._call(lambda bus: bus.replay(service, ids))

    def purge(self, service: str | Service, ids: Sequence[str] | None = None) -> int:
        """Delete dead letters (all, or those with ``ids``); how many."""
        return self._call(lambda bus: bus.purge(service, ids))

    def drop_namespace(self, *, force: bool = False) -> int:
        """As `pycomms.Bus.drop_namespace`; the bus is closed afterwards."""
        removed = self._call(lambda bus: bus.drop_namespace(force=force))
        self.close(grace=0)
        return removed

    def _call(self, make: Callable[[AsyncBus], Coroutine[Any, Any, T]]) -> T:
        if self._closed:
            raise BusClosed("the bus is closed")
        if self._runtime.pid != os.getpid():
            self.reopen_after_fork()
        runtime, bus = self._runtime, self._bus
        if threading.current_thread() is runtime.thread:
            raise RuntimeError(
                "a pycomms.sync.Bus was called from its own event loop (an async handler of one of its "
                "services): that would wait for itself; await the call on ctx (ctx.publish, ctx.send, "
                "ctx.request) instead"
            )
        try:
            future = runtime.submit(make(bus))
        except RuntimeError:  # the loop was closed under us: close() won the race
            raise BusClosed("the bus is closed") from None
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise BusClosed("the bus was closed while the call was running") from None
            raise
        except BaseException:
            future.cancel()  # KeyboardInterrupt in the waiting thread: do not leave the call running
            raise

    # lifecycle -------------------------------------------------------------------------------

    def reopen_after_fork(self) -> None:
        """In a forked child: open this bus's own connection now (its first call would
        do it). Does nothing in the process that opened the bus, or once reopened."""
        with self._lock:
            if self._closed or self._runtime.pid == os.getpid():
                return
            log.info("pycomms.sync: process %d forked from %d opens its own connection", os.getpid(), self._runtime.pid)
            _inherited.append((self._runtime, self._bus))
            self._runtime, self._bus = self._start()

    def close(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop taking deliveries, let running handlers finish for up to ``grace``
        seconds, flush publishes, disconnect, then stop the loop and its thread.
        Idempotent; calls still waiting in other threads end with `BusClosed`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _open_buses.discard(self)
        runtime = self._runtime
        if runtime.pid != os.getpid():
            return  # a forked child that never used the bus: the parent's connection is not ours to close
        if threading.current_thread() is runtime.thread:
            raise RuntimeError("a pycomms.sync.Bus cannot be closed from its own event loop thread")
        try:
            runtime.submit(self._bus.close(grace)).result(timeout=max(grace, 0.0) + 2 * CLOSE_BOUND + 5.0)
        except concurrent.futures.TimeoutError:
            log.error("pycomms.sync: the bus did not close within grace + %.1fs; stopping its loop", 2 * CLOSE_BOUND)
        finally:
            for waker in list(self._wakers):
                waker.set()
            runtime.stop()

    def serve(self, *, handle_signals: bool = True, grace: float = DEFAULT_GRACE) -> None:
        """Block while the services run, until `close` is called (from another thread)
        or, with ``handle_signals`` in the main thread, SIGINT or SIGTERM arrives; then
        close with ``grace``."""
        stop = threading.Event()
        self._wakers.add(stop)  # before the check: a close() from another thread after it wakes us
        if self._closed:
            self._wakers.discard(stop)
            raise BusClosed("the bus is closed")
        if self._runtime.pid != os.getpid():
            self.reopen_after_fork()
        previous: dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: FrameType | None) -> None:
                log.info("received %s, closing gracefully (grace %.1fs)", signal.Signals(signum).name, grace)
                stop.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        log.info("serving %s on %s as node %s", ", ".join(self.node.services) or "no services", self.url, self.node.id)
        try:
            stop.wait()  # set by a signal handler or by close()
        finally:
            self._wakers.discard(stop)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.close(grace)


async def _open(opener: async_connect) -> AsyncBus:
    return await opener


def _forget_parents_buses() -> None:
    """In a forked child: the locks of every bus may have been held by a thread that
    does not exist here; new ones, so that the first call can reopen the bus."""
    for bus in list(_open_buses):
        bus._lock = threading.Lock()


def _close_at_exit() -> None:
    for bus in list(_open_buses):
        if bus._runtime.pid == os.getpid():
            log.info("pycomms.sync: closing %r at interpreter exit", bus)
            bus.close(grace=min(DEFAULT_GRACE, 5.0))


os.register_at_fork(after_in_child=_forget_parents_buses)
atexit.register(_close_at_exit)
