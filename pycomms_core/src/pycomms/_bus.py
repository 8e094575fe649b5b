"""The bus: the application's handle on a backend (`pycomms.connect`)."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from ._closing import finish_by
from ._consumer import Binding, ServiceRunner, bind
from ._context import Outlet
from ._envelope import Envelope, Kind, new_id
from ._errors import (
    BusClosed,
    NamespaceInUse,
    OperationError,
    PublishError,
    PyCommsError,
)
from ._messages import Command, Event, Message, Request
from ._middleware import wrap_outgoing
from ._outgoing import outgoing, outgoing_all
from ._plugins import plugin_manager
from ._requests import Requests
from ._service import Service, check_services, service_name
from .spi import (
    CLOSE_BOUND,
    BackendConfig,
    Capabilities,
    DeadLetter,
    NodeInfo,
    Subscription,
    TransactionalTransport,
    Transport,
)

log = logging.getLogger("pycomms")
R = TypeVar("R", bound=Message)
_T = TypeVar("_T")
DEFAULT_GRACE = 10.0


class BusState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_OPEN, _CLOSED = BusState.OPEN, BusState.CLOSED  # checked per message: a module global is cheaper to load


class Bus:
    """A connection to one backend, serving zero or more services.

    Made by `pycomms.connect`. Handlers run from the moment the bus is open; `serve`
    just keeps the process alive until the bus is closed or a signal arrives.
    """

    def __init__(
        self, transport: Transport, config: BackendConfig, services: Sequence[Service], name: str | None
    ) -> None:
        self._transport = transport
        self._config = config
        self._services = list(services)
        check_services(self._services)
        handles = sorted({t for s in self._services for t in s.handlers})
        self.node = NodeInfo(
            id=f"{uuid.uuid4().hex[:16]}",
            name=name or "+".join(s.name for s in self._services) or "client",
            services=tuple(s.name for s in self._services),
            handles=tuple(handles),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            last_seen=time.time(),
        )
        self._state = BusState.UNOPENED
        self._runners: list[ServiceRunner] = []
        # the transport's calls bound once: one Python frame less per request and per reply
        publish = partial(self._hand_over, transport.publish)
        self._requests = Requests(
            self.node.id, config.max_message_size, publish, partial(self._hand_over, transport.send_reply)
        )
        self._emit_out, self._ask_out = wrap_outgoing(
            self._emit, self._request, plugin_manager().hook, self.node, config.scheme
        )
        self._outlet = Outlet(self.node, self._emit_out, self._ask_out)
        self._publishing = 0
        self._published: asyncio.Future[None] | None = None
        """Set when the last publish or reply ends, while close waits for them."""
        self._closed = asyncio.Event()
        self._close_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Bus {self._config.redacted_url!r} node={self.node.id} {self._state.value}>"

    @property
    def url(self) -> str:
        """The backend URL, with secrets redacted."""
        return self._config.redacted_url

    @property
    def namespace(self) -> str:
        return self._config.namespace

    @property
    def capabilities(self) -> Capabilities:
        """What the backend promises (see `pycomms.spi.Capabilities`)."""
        return self._transport.capabilities

    @property
    def closed(self) -> bool:
        return self._state is BusState.CLOSED

    # lifecycle ---------------------------------------------------------------------

    async def _open(self) -> Bus:
        if self._state is not BusState.UNOPENED:
            raise RuntimeError(f"bus is already {self._state.value}")
        try:
            await self._transport.open(self.node, self._requests.on_reply)
        except BaseException as exc:
            self._state = BusState.CLOSED
            self._closed.set()
            try:
                await self._transport.close()  # release whatever was opened before the failure
            except Exception:
                log.debug("transport close after a failed open raised", exc_info=True)
            if isinstance(exc, PyCommsError) or not isinstance(exc, Exception):
                raise
            # a transport must map its errors; this is the safety net
            raise PyCommsError(f"opening {self.url} failed: {type(exc).__name__}: {exc}") from exc
        if self._close_started():  # closed while the transport was opening
            await self._transport.close()
            raise BusClosed("the bus was closed while it was opening")
        self._state = BusState.OPEN
        pm = plugin_manager()
        try:
            for service in self._services:
                middleware = [m for m in pm.hook.pycomms_middleware(service=service, system=self._config.scheme) if m]
                bindings: dict[str, Binding] = {name: bind(spec, middleware) for name, spec in service.handlers.items()}
                subscription = Subscription(
                    service=service.name,
                    events=frozenset(n for n, s in service.handlers.items() if s.message_type.kind == "event"),
                    commands=frozenset(n for n, s in service.handlers.items() if s.message_type.kind != "event"),
                    concurrency=service.concurrency,
                    ephemeral=service.ephemeral,
                )
                receiver = await self._transport.subscribe(subscription)
                if self._close_started():
                    await receiver.close()
                    raise BusClosed("the bus was closed while it was opening")
                runner = ServiceRunner(
                    service,
                    receiver,
                    bindings,
                    outlet=self._outlet,
                    replier=self._requests,
                    max_size=self._config.max_message_size,
                    on_dead_letter=self._dead_lettered,
                )
                runner.start()
                self._runners.append(runner)
        except BaseException:
            await self.close(grace=0)
            raise
        log.info(
            "bus open: node=%s name=%s url=%s services=%s",
            self.node.id,
            self.node.name,
            self.url,
            ",".join(self.node.services) or "-",
        )
        return self

    def _close_started(self) -> bool:
        return self._close_task is not None

    async def __aenter__(self) -> Bus:
        if self._state is BusState.UNOPENED:
            await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop taking deliveries, let running handlers finish for up to ``grace``
        seconds, flush publishes, then cancel what is left without acking it (another
        instance will get it) and disconnect. Idempotent."""
        if self._close_task is None or (self._close_task.cancelled() and self._state is not BusState.CLOSED):
            self._close_task = asyncio.ensure_future(self._do_close(grace))
        me = asyncio.current_task()
        if any(runner.runs(me) for runner in self._runners):
            return  # called from a handler: do not wait for ourselves; the close goes on
        try:
            await asyncio.shield(self._close_task)
        except asyncio.CancelledError:
            if self._close_task.cancelled() and me is not None and not me.cancelling():
                return  # the close task was cancelled by someone else; its finally closed the bus
            raise

    async def _do_close(self, grace: float) -> None:
        was_open = self._state is BusState.OPEN
        self._state = BusState.CLOSING
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace)
        hard_deadline = deadline + CLOSE_BOUND  # close(grace) returns by then, even on a silent broker
        try:
            await finish_by(self._close_steps(loop, deadline), hard_deadline - CLOSE_BOUND / 2, "stopping services")
        finally:
            self._requests.fail_all()
            try:  # inline, not a task: the transport's close starts in this very step
                async with asyncio.timeout_at(max(hard_deadline, loop.time() + 1.0)):
                    await self._transport.close()
            except TimeoutError:
                log.error(
                    "bus close: the %s transport did not close within grace + %.1fs", self._config.scheme, CLOSE_BOUND
                )
            except Exception:
                log.exception("bus close: transport close failed")
            self._state = BusState.CLOSED
            self._closed.set()
        if was_open:
            log.info("bus closed: node=%s", self.node.id)

    async def _close_steps(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        await asyncio.gather(*(runner.stop(deadline) for runner in self._runners), return_exceptions=True)
        if self._publishing:
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    while self._publishing:
                        self._published = loop.create_future()
                        await self._published
            except TimeoutError:
                log.warning("bus close: %d publish call(s) still running after the grace period", self._publishing)

    async def serve(self, *, handle_signals: bool = True, grace: float = DEFAULT_GRACE) -> None:
        """Run the handlers until the bus is closed; with ``handle_signals``, SIGINT and
        SIGTERM close it, letting handlers finish for up to ``grace`` seconds."""
        self._check_open()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        previous: dict[signal.Signals, Any] = {}
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    previous[sig] = signal.getsignal(sig)
                    loop.add_signal_handler(sig, self._on_signal, sig, grace)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass  # not the main thread, or not supported here
        log.info(
            "serving %s on %s as node %s%s",
            ", ".join(self.node.services) or "no services",
            self.url,
            self.node.id,
            "; Ctrl-C to stop" if installed else "",
        )
        try:
            await self._closed.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
                if previous.get(sig) is not None:
                    signal.signal(sig, previous[sig])

    def _on_signal(self, sig: signal.Signals, grace: float) -> None:
        log.info("received %s, closing gracefully (grace %.1fs)", sig.name, grace)
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._do_close(grace))

    def _check_open(self) -> None:
        if self._state is not _OPEN:
            if self._state is BusState.UNOPENED:
                raise RuntimeError(
                    "the bus is not open yet: use 'async with pycomms.connect(...)' or 'await pycomms.connect(...)'"
                )
            raise BusClosed(f"the bus is {self._state.value}")

    # sending -----------------------------------------------------------------------

    async def publish(
        self, *events: Event, key: str | None = None, headers: dict[str, str] | None = None, connection: Any = None
    ) -> None:
        """Publish events (fan-out); returns once the backend accepted all of them.
        Many events go in one backend round trip.

        ``connection``: the caller's open database connection (SQL backends): the
        events are written in its transaction and delivered if and only if it commits.
        """
        self._check_open()
        await self._emit_out("event", events, key, headers, None, None, connection)

    async def send(
        self, *commands: Command, key: str | None = None, headers: dict[str, str] | None = None, connection: Any = None
    ) -> None:
        """Send commands to the one service that handles each; returns once accepted.
        ``connection`` as for `publish`."""
        self._check_open()
        await self._emit_out("command", commands, key, headers, None, None, connection)

    @property
    def unsent(self) -> int:
        """After `close`: how many messages `publish`/`send` accepted that the
        transport still held only in memory when it closed (lost; a backend that
        keeps them on disk, or hands every message to a broker before returning,
        reports 0). Read by ``pycomms publish`` to say "not delivered"."""
        return int(getattr(self._transport, "unsent", 0) or 0)

    @property
    def max_message_size(self) -> int:
        """The size limit of one encoded message, in bytes."""
        return self._config.max_message_size

    async def request(self, request: Request[R], *, timeout: float, headers: dict[str, str] | None = None) -> R:
        """Send a request and wait for its typed reply.

        Raises `RequestTimeout` when no reply came within ``timeout`` seconds (also when
        nobody handles the type) and `RemoteError` when the handler failed for good.
        """
        if self._state is not _OPEN:
            self._check_open()
        return await self._ask_out(request, timeout, headers, None, None, new_id())  # type: ignore[no-any-return]

    async def _emit(
        self,
        kind: Kind,
        messages: Iterable[Message],
        key: str | None,
        headers: dict[str, str] | list[dict[str, str]] | None,
        correlation_id: str | None,
        causation_id: str | None,
        connection: Any = None,
    ) -> Sequence[Envelope]:
        if self._state is _CLOSED:
            raise BusClosed("the bus is closed")
        size, node = self._config.max_message_size, self.node.id
        envelopes = outgoing_all(node, size, kind, messages, key, headers, correlation_id, causation_id)
        if connection is not None:
            await self._publish_in(connection, envelopes)
        elif envelopes:
            await self._hand_over(self._transport.publish, envelopes)
        return envelopes

    async def _publish_in(self, connection: Any, envelopes: Sequence[Envelope]) -> None:
        transport = self._transport
        if not (self.capabilities.transactional_publish and isinstance(transport, TransactionalTransport)):
            raise TypeError(
                f"connection= needs a backend that publishes inside the caller's transaction (an SQL backend); "
                f"{self._config.scheme}:// does not"
            )
        if not envelopes:
            return
        try:
            await transport.publish_in(connection, envelopes)
        except (PyCommsError, TypeError):
            raise
        except Exception as exc:  # a transport must map its errors; this is the safety net
            raise PublishError(f"publish failed: {type(exc).__name__}: {exc}") from exc

    async def _hand_over(self, call: Callable[[_T], Awaitable[None]], arg: _T) -> None:
        """Await a transport's publish or send_reply of ``arg``, counted for close's flush."""
        self._publishing += 1
        try:
            await call(arg)
        except PyCommsError:
            raise
        except Exception as exc:  # a transport must map its errors; this is the safety net
            raise PublishError(f"publish failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._publishing -= 1
            if not self._publishing and (published := self._published) is not None and not published.done():
                published.set_result(None)

    def _request(
        self,
        request: Request[R],
        timeout: float,
        headers: dict[str, str] | None,
        correlation_id: str | None,
        causation_id: str | None,
        message_id: str,
    ) -> Coroutine[Any, Any, R]:  # not a coroutine itself: one frame less per request; raises when awaited
        if timeout is None or timeout <= 0:
            raise ValueError(f"request timeout must be > 0 seconds, got {timeout!r}")
        if self._state is _CLOSED:
            raise BusClosed("the bus is closed")
        env = outgoing(
            self.node.id,
            self._config.max_message_size,
            "request",
            request,
            None,
            headers,
            correlation_id,
            causation_id,
            reply_to=self.node.id,
            message_id=message_id,
        )
        return self._requests.ask(env, request.reply_type, timeout)  # type: ignore[arg-type]

    # presence and dead letters --------------------------------------------------------

    async def nodes(self) -> list[NodeInfo]:
        """Every live node on this backend and namespace, this one included."""
        self._check_open()
        return await self._transport.nodes()

    async def dead_letters(self, service: str | Service, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``service``, oldest first."""
        self._check_open()
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        return await self._transport.dead_letters(service_name(service), limit)

    async def replay(self, service: str | Service, ids: Sequence[str] | None = None) -> int:
        """Send dead letters (all, or those with ``ids``) back to ``service`` with a
        fresh attempt count; returns how many."""
        self._check_open()
        return await self._transport.replay(service_name(service), _ids(ids))

    async def purge(self, service: str | Service, ids: Sequence[str] | None = None) -> int:
        """Delete dead letters (all, or those with ``ids``); returns how many."""
        self._check_open()
        return await self._transport.purge(service_name(service), _ids(ids))

    async def drop_namespace(self, *, force: bool = False) -> int:
        """Remove every broker-side object of this bus's namespace (streams, keys,
        queues, exchanges, tables, rows, registry entries) and close the bus; returns
        how many objects were removed. Raises `NamespaceInUse` while other nodes of
        the namespace are present, unless ``force``; a bus with services refuses
        (it would delete its own queues under its handlers)."""
        self._check_open()
        if self._services:
            raise OperationError(
                "drop_namespace() needs a bus without services (connect with services=[]); "
                f"this one runs {', '.join(s.name for s in self._services)}"
            )
        others = [node for node in await self._transport.nodes() if node.id != self.node.id]
        if others and not force:
            listed = ", ".join(f"{n.name} ({n.host} pid {n.pid})" for n in others[:5])
            more = f" and {len(others) - 5} more" if len(others) > 5 else ""
            raise NamespaceInUse(
                f"namespace {self._config.namespace!r} on {self._config.redacted_url} is in use by "
                f"{len(others)} node(s): {listed}{more}; stop them first or pass force=True (--force)"
            )
        try:
            removed = await self._transport.drop_namespace()
        except PyCommsError:
            raise
        except Exception as exc:  # a transport must map its errors; this is the safety net
            raise OperationError(
                f"dropping namespace {self._config.namespace!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        await self.close(grace=0)
        log.info("namespace %s dropped on %s: %d object(s)", self._config.namespace, self.url, removed)
        return removed

    def _dead_lettered(self, letter: DeadLetter) -> None:
        try:
            plugin_manager().hook.pycomms_dead_lettered(letter=letter)
        except Exception:
            log.exception("a pycomms_dead_lettered hook failed")


def _ids(ids: Sequence[str] | None) -> list[str] | None:
    if ids is None:
        return None
    if isinstance(ids, str):
        raise TypeError("ids must be a sequence of dead letter ids, not a single string")
    return list(ids)
