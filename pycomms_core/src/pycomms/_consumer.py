"""One service instance at work: fetch deliveries, run handlers, settle the outcome.

The pipeline is plain composed Python on the hot path: decode (size checked first),
look up the handler, validate, call, then ack / retry later / dead-letter. Retries
are handed back to the transport with a delay, so a failing message never holds a
handler slot while it waits.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from ._context import Context, Outlet
from ._envelope import Envelope, EnvelopeError, new_id, peek_type
from ._errors import PyCommsError, Reject, RetryLater
from ._middleware import Handler, Middleware, compose
from ._service import HandlerSpec, Service
from .spi import DeadLetter, Delivery, Receiver, stop_tasks

log = logging.getLogger("pycomms")


class Replier(Protocol):
    """Sends a request handler's outcome back to the asking node (`_requests.Requests`)."""

    async def reply(self, request: Envelope, reply: Any) -> None: ...

    async def reply_error(self, request: Envelope, reason: str, error: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Binding:
    """A handler ready to run: its type and its normalized, wrapped callable, and what
    the pipeline checks per message, looked up once (``kind``, ``message_type``,
    ``reply_type``: None unless a request type declares one)."""

    spec: HandlerSpec
    call: Handler
    needs_context: bool
    kind: str
    message_type: type[Any]
    reply_type: type[Any] | None
    direct: Callable[[Any], Awaitable[Any]] | None = None
    """The async handler itself when ``call`` would only drop the ctx (no middleware)."""


def bind(spec: HandlerSpec, middleware: Sequence[Middleware]) -> Binding:
    """Normalize a declared handler to ``async (message, ctx)`` and wrap it."""
    func = spec.func
    call: Handler
    if spec.is_async:
        if spec.takes_context:
            call = func
        else:

            def call(message: Any, ctx: Context) -> Any:  # returns the handler's coroutine: no extra frame
                return func(message)

    else:
        if spec.takes_context:

            async def call(message: Any, ctx: Context) -> Any:
                return await asyncio.to_thread(func, message, ctx)

        else:

            async def call(message: Any, ctx: Context) -> Any:
                return await asyncio.to_thread(func, message)

    # without a ctx parameter or middleware nobody reads the Context: skip building it
    message_type = spec.message_type
    reply_type = getattr(message_type, "reply_type", None)
    return Binding(
        spec,
        compose(call, middleware),
        spec.takes_context or bool(middleware),
        message_type.kind,
        message_type,
        reply_type,
        func if spec.is_async and not spec.takes_context and not middleware else None,
    )


_PROBE_EVERY = 16
"""At concurrency 1, a yield before a fetch is tried again after this many receives in a row that waited."""


class ServiceRunner:
    """Runs one service on one bus with at most ``service.concurrency`` handlers."""

    def __init__(
        self,
        service: Service,
        receiver: Receiver,
        bindings: dict[str, Binding],
        *,
        outlet: Outlet,
        replier: Replier,
        max_size: int,
        on_dead_letter: Callable[[DeadLetter], None],
    ) -> None:
        self._outlet = outlet
        self._replier = replier
        self._service = service
        self._receiver = receiver
        self._bindings = bindings
        self._on_dead_letter = on_dead_letter
        self._limit = service.concurrency
        self._retry = service.retry
        self._max_size = max_size
        self._ready: collections.deque[Delivery] = collections.deque()
        self._sleepers: collections.deque[asyncio.Future[None]] = collections.deque()
        """Workers waiting for a delivery (a hand-off without asyncio.Queue's bookkeeping)."""
        self._waking = 0
        """Workers woken that have not run yet (see `_wake_one`)."""
        self._pending = 0  # buffered + running
        self._idle: asyncio.Future[None] | None = None
        """Set when the last pending delivery is settled, while `stop` waits for it."""
        self._fetcher: asyncio.Task[None] | None = None
        """The worker inside `Receiver.receive`, if any (one at a time)."""
        self._fetch_closed = False
        """No more `receive` calls: the service is stopping, or the receiver closed."""
        self._fetched_many = False
        self._waited = False
        self._suspended = 0
        """Receives in a row that waited (concurrency 1, see `_mark_waited`)."""
        self._checking = False
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def service(self) -> Service:
        return self._service

    def runs(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task`` is one of this service's handler workers."""
        return task is not None and task in self._workers

    def start(self) -> None:
        name = self._service.name
        self._workers = [
            asyncio.create_task(self._work(), name=f"pycomms:{name}:worker{i}") for i in range(self._limit)
        ]

    async def stop(self, deadline: float) -> None:
        """Stop fetching, let running handlers finish until ``deadline`` (loop time),
        then cancel the rest unsettled and release them through the receiver."""
        self._fetch_closed = True
        fetcher = self._fetcher  # the worker inside receive(): it handles nothing, so it may go
        if fetcher is not None:
            if await stop_tasks([fetcher], give_up_after=5.0):
                log.error("service %s: receive() ignores cancellation; abandoning it", self._service.name)
            elif not fetcher.cancelled() and fetcher.exception() is not None:
                log.debug("service %s: receive() ended with %r while stopping", self._service.name, fetcher.exception())
        remaining = deadline - asyncio.get_running_loop().time()
        if self._pending and remaining > 0:
            try:
                async with asyncio.timeout(remaining):
                    while self._pending:
                        self._idle = asyncio.get_running_loop().create_future()
                        await self._idle
            except TimeoutError:
                log.warning(
                    "service %s: grace period over with %d message(s) in flight; cancelling, they will be redelivered",
                    self._service.name,
                    self._pending,
                )
        self._stopping = True
        for worker in self._workers:
            worker.cancel()
        _, stuck = await asyncio.wait(self._workers, timeout=1.0) if self._workers else (set(), set())
        if stuck:
            log.error("service %s: %d handler(s) ignore cancellation; abandoning them", self._service.name, len(stuck))
        try:
            await self._receiver.close()
        except Exception:
            log.exception("service %s: error while closing its receiver", self._service.name)

    async def _work(self) -> None:
        """One handler slot. A worker with nothing to do fetches, unless another already
        does or every slot is taken, and then handles what it fetched itself: a message
        that arrives at an idle service is handled without a hand-off between tasks."""
        ready, sleepers, receiver, limit = self._ready, self._sleepers, self._receiver, self._limit
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        while not self._stopping:
            if not ready:
                if self._may_fetch():
                    self._fetcher = me
                    try:
                        if self._fetched_many:  # others had no turn since: give them one before more
                            self._fetched_many = False
                            await asyncio.sleep(0)
                        if limit == 1:  # see `_mark_waited`
                            self._waited = False
                            loop.call_soon(self._mark_waited)
                        batch = await receiver.receive(limit - self._pending)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        # the transport reconnects by itself; say so once a second, without a traceback
                        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
                        log.warning(
                            "service %s: receive failed (%s: %s); retrying in 1s",
                            self._service.name,
                            type(exc).__name__,
                            detail,
                        )
                        await asyncio.sleep(1.0)
                        continue
                    finally:
                        self._fetcher = None
                    if not batch:
                        self._fetch_closed = True  # the receiver is closed
                        continue
                    self._pending += len(batch)
                    ready.extend(batch)
                    if limit > 1:
                        self._fetched_many = len(batch) > 1  # a backlog gives full batches
                    elif self._waited:  # see `_mark_waited`
                        self._suspended = (self._suspended + 1) % _PROBE_EVERY
                        self._fetched_many = not self._suspended
                    else:
                        self._suspended = 0
                        self._fetched_many = True
                    if self._fetch_closed:  # stop() cancelled this fetch and receive() swallowed it
                        self._wake_one()  # the others handle the batch; this worker goes as asked
                        return
                    continue
                sleeper = loop.create_future()
                sleepers.append(sleeper)
                try:
                    await sleeper
                finally:
                    if sleeper.done() and not sleeper.cancelled():
                        self._waking -= 1
                continue
            delivery = ready.popleft()
            if not self._waking:
                if ready:
                    self._wake_one()  # to take the next one should this handler wait for something
                elif not self._checking and self._fetcher is None and not self._fetch_closed and self._pending < limit:
                    self._checking = True  # to fetch should this handler wait (a task switch only then)
                    loop.call_soon(self._check_fetcher)
            try:
                await self._handle(delivery, me)
            except asyncio.CancelledError:
                raise
            except PyCommsError as exc:  # a settle the backend could not do (its lease will hand the message on)
                log.warning("service %s: settling a message failed: %s", self._service.name, exc)
            except Exception:
                log.exception("service %s: unexpected error while settling a message", self._service.name)
            finally:
                self._pending -= 1
                if not self._pending and (idle := self._idle) is not None and not idle.done():
                    idle.set_result(None)

    def _may_fetch(self) -> bool:
        """Nobody fetches, fetching goes on, and there is room for another delivery."""
        return self._fetcher is None and not self._fetch_closed and self._pending < self._limit

    def _mark_waited(self) -> None:
        """At concurrency 1 every batch is of one, so a backlog shows only as a
        receive that returned without the loop turning: this callback, scheduled just
        before the receive, has run by its return if and only if the loop turned.

        After a receive that returned at once the worker yields before the next fetch
        (a backlog gives others a turn after each message; a sender in this process,
        memory://, sends its next message during the yield, so the fetch finds it
        waiting). After one that waited it fetches at once (over a network the next
        message cannot come during a yield, which would only cost a loop turn), except
        every `_PROBE_EVERY`-th time in a row, to find out whether yields pay again."""
        self._waited = True

    def _check_fetcher(self) -> None:
        """A handler started last step with room for more: if it is still running and
        nobody fetches, wake a worker to fetch."""
        self._checking = False
        if not self._ready and self._may_fetch():
            self._wake_one()

    def _wake_one(self) -> None:
        """Wake a sleeping worker unless one is already on its way. Woken workers wake
        the next while deliveries remain: handlers that never wait are all run by one
        worker without a wake-up each, and every handler that does wait lets one more
        worker start (to handle or to fetch), up to the concurrency limit."""
        if self._waking:
            return
        sleepers = self._sleepers
        while sleepers:
            sleeper = sleepers.popleft()
            if not sleeper.done():
                sleeper.set_result(None)
                self._waking += 1
                return

    async def _handle(self, delivery: Delivery, me: asyncio.Task[None]) -> None:
        """Run one delivery through the pipeline in worker task ``me``."""
        try:
            # memory:// hands over the envelope it was given (`MemoryDelivery.decoded`)
            decoded = getattr(delivery, "decoded", None)
            env = Envelope.decode(delivery.data, self._max_size) if decoded is None else decoded(self._max_size)
        except EnvelopeError as exc:
            await self._dead(delivery, None, exc.reason, exc.detail)
            return
        binding = self._bindings.get(env.type)
        if binding is None:
            await self._dead(
                delivery, env, "unknown_type", f"service {self._service.name!r} has no handler for {env.type!r}"
            )
            return
        kind = env.kind
        if kind != binding.kind or (kind == "request" and not env.reply_to):
            await self._dead(delivery, env, "malformed", _kind_mismatch(env, binding.spec))
            return
        try:  # what model_validate does, without its keyword handling
            message = binding.message_type.__pydantic_validator__.validate_python(env.body)
        except ValidationError as exc:
            await self._dead(delivery, env, "invalid", str(exc))
            return
        attempt = delivery.attempt
        ctx = (
            Context(
                self._outlet,
                message_id=env.id,
                correlation_id=env.correlation_id,
                causation_id=env.causation_id,
                attempt=attempt,
                headers=env.headers,
                service=self._service.name,
            )
            if binding.needs_context
            else None
        )
        try:
            direct = binding.direct
            result = await (binding.call(message, ctx) if direct is None else direct(message))  # type: ignore[arg-type]
        except Reject as exc:
            await self._dead(delivery, env, "rejected", exc.reason)
            return
        except RetryLater as exc:
            if attempt >= self._retry.max_attempts:
                await self._dead(delivery, env, "failed", f"RetryLater after {attempt} attempts")
            else:
                await delivery.retry(exc.delay)
            return
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit | GeneratorExit):
                raise  # GeneratorExit: an abandoned handler's coroutine is being closed
            if me.cancelling():
                raise asyncio.CancelledError from exc
            if attempt >= self._retry.max_attempts:
                await self._dead(delivery, env, "failed", _describe(exc))
            else:
                log.debug("service %s: %s %s attempt %d failed: %r", self._service.name, env.type, env.id, attempt, exc)
                await delivery.retry(self._retry.delay_for(attempt + 1))
            return
        if me.cancelling():
            raise asyncio.CancelledError  # the handler swallowed our cancel: do not ack
        if kind == "request":  # its replyto was checked above
            reply_type = binding.reply_type
            if reply_type is None or not isinstance(result, reply_type):
                expected = getattr(reply_type, "__name__", "?")
                error = f"handler {binding.spec.name} returned {type(result).__name__}, expected {expected}"
                await self._dead(delivery, env, "failed", error)
                return
            try:
                await self._replier.reply(env, result)
            except Exception as exc:
                await self._dead(delivery, env, "failed", f"reply could not be sent: {_describe(exc)}")
                return
        await delivery.ack()

    async def _dead(self, delivery: Delivery, env: Envelope | None, reason: str, error: str) -> None:
        letter = DeadLetter(
            id=env.id if env else new_id(),
            type=env.type if env else peek_type(delivery.data),
            service=self._service.name,
            reason=reason,
            error=error[:4000],
            attempts=delivery.attempt,
            failed_at=time.time(),
            body=env.body if env else None,
            source=env.source if env else "",
            envelope=delivery.data,
        )
        await delivery.dead_letter(letter)
        log.warning(
            "dead letter: service=%s type=%s id=%s reason=%s attempts=%d error=%s",
            letter.service,
            letter.type,
            letter.id,
            reason,
            letter.attempts,
            error.splitlines()[0] if error else "",
        )
        if env is not None and env.kind == "request" and env.reply_to:
            await self._replier.reply_error(env, reason, error)
        self._on_dead_letter(letter)


def _kind_mismatch(env: Envelope, spec: HandlerSpec) -> str:
    expected = spec.message_type.kind
    if env.kind == expected:  # a request without replyto: its reply could go nowhere
        return f"event attribute 'replyto' is {env.reply_to!r}; a request ({env.type!r}) needs the asking node's id"
    return (
        f"event attribute 'kind' is {env.kind!r} but {env.type!r} is a {expected} type "
        f"({spec.message_type.__name__}); expected kind {expected!r}"
    )


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return f"{type(exc).__name__}: <unprintable>"
