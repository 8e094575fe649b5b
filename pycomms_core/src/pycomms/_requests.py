"""Request/reply on one bus: the replies this node waits for, and the replies its
request handlers send back.

A request is published like a command with ``reply_to`` = this node's id; the
transport hands every reply addressed to this node to `Requests.on_reply`, which
matches it to the waiting caller by ``causation_id`` (the request's id).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from ._envelope import Envelope, EnvelopeError, new_id_at
from ._errors import BusClosed, PyCommsError, RemoteError, RequestTimeout
from ._messages import Message

log = logging.getLogger("pycomms")

ERROR_HEADER = "pycommserror"
"""The extension attribute of an error reply: its value is the dead-letter reason on the handling side."""
_WIRE1_ERROR_HEADER = "pycomms-error"  # the same, as a wire-1 peer sends it

M = TypeVar("M", bound=Message)
Publish = Callable[[Sequence[Envelope]], Awaitable[None]]
SendReply = Callable[[Envelope], Awaitable[None]]


class Requests:
    """The pending requests of one node, and the sending of its replies."""

    def __init__(self, node_id: str, max_size: int, publish: Publish, send_reply: SendReply) -> None:
        self._node_id = node_id
        self._max_size = max_size
        self._publish = publish
        self._send_reply = send_reply
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._deadlines = _Deadlines()

    @property
    def pending(self) -> int:
        """How many requests wait for their reply."""
        return len(self._pending)

    async def ask(self, env: Envelope, reply_type: type[M], timeout: float) -> M:
        """Publish the request ``env`` and wait up to ``timeout`` seconds for its reply."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        future: asyncio.Future[Envelope] = loop.create_future()
        ask = _Ask(future, task)
        pending = self._pending
        pending[env.id] = future
        # asyncio.timeout() costs ~3x as much per call as a timer; one timer for every deadline less still
        self._deadlines.add(loop, loop.time() + timeout, ask, len(pending))
        try:
            ask.sending = True
            try:
                await self._publish([env])
            finally:
                ask.sending = False
            reply = await future
        except asyncio.CancelledError:
            if ask.cancelled and task.uncancel() <= ask.cancelling:
                raise RequestTimeout(f"no reply to {env.type} {env.id} within {timeout}s") from None
            raise
        except TimeoutError:
            if ask.cancelled:  # the deadline's cancellation was swallowed by the publish: take it back
                task.uncancel()
            raise RequestTimeout(f"no reply to {env.type} {env.id} within {timeout}s") from None
        finally:
            ask.finished = True
            pending.pop(env.id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # close may have failed it while we were still publishing
        headers = reply.headers  # an ordinary reply has none
        error_type = (headers.get(ERROR_HEADER) or headers.get(_WIRE1_ERROR_HEADER)) if headers else None
        if error_type is not None:
            body = reply.body if isinstance(reply.body, dict) else {}
            raise RemoteError(
                f"{env.type} failed remotely ({error_type}): {body.get('error', '')}",
                error_type=error_type,
                reason=str(body.get("error", "")),
            )
        try:  # what model_validate does, without its keyword handling
            return reply_type.__pydantic_validator__.validate_python(reply.body)  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise RemoteError(
                f"reply to {env.type} is not a valid {reply_type.__name__}: {exc}", error_type="invalid_reply"
            ) from None

    def on_reply(self, data: bytes) -> None:
        """The transport's `ReplySink`: match an encoded reply to its waiting request."""
        try:
            env = Envelope.decode(data, self._max_size)
        except EnvelopeError as exc:
            log.warning("dropping an undecodable reply: %s", exc.detail)
            return
        if env.kind != "reply":
            log.warning("dropping a %r envelope on the reply route (kind must be 'reply'): %s", env.kind, env.type)
            return
        future = self._pending.get(env.causation_id or "")
        if future is None or future.done():
            log.debug("dropping a reply nobody waits for: %s to %s", env.type, env.causation_id)
            return
        future.set_result(env)

    def fail_all(self) -> None:
        """The bus closed: every waiting request raises `BusClosed`."""
        self._deadlines.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BusClosed("the bus was closed while waiting for a reply"))
        self._pending.clear()

    async def reply(self, request: Envelope, reply: Message) -> None:
        """Send a request handler's ``reply`` back to the asking node."""
        now = time.time()  # `_reply_to` and `_bounded`, inline: two calls less per reply
        env = Envelope(
            new_id_at(now),
            reply.type_name,
            "reply",
            self._node_id,
            reply.__pydantic_serializer__.to_json(reply),
            now,
            request.correlation_id,
            request.id,
            request.reply_to,
            None,
            {},
        )
        if len(env.encode()) > self._max_size:
            env = self._bounded(env)
        try:  # `_send`, inline: one coroutine less per reply
            await self._send_reply(env)
        except PyCommsError as exc:
            log.warning("could not send the reply to %s: %s", env.causation_id, exc)

    async def reply_error(self, request: Envelope, reason: str, error: str) -> None:
        """Tell the asking node its request was dead-lettered (``reason``)."""
        await self._send(self._reply_to(request, "pycomms.error", {"error": error[:4000]}, {ERROR_HEADER: reason}))

    def _reply_to(self, request: Envelope, type_name: str, body: object, headers: dict[str, str]) -> Envelope:
        now = time.time()
        return Envelope(
            new_id_at(now),
            type_name,
            "reply",
            self._node_id,
            body,
            now,
            request.correlation_id,
            request.id,
            request.reply_to,
            None,
            headers,
        )

    async def _send(self, env: Envelope) -> None:
        env = self._bounded(env)
        try:
            await self._send_reply(env)
        except PyCommsError as exc:
            log.warning("could not send the reply to %s: %s", env.causation_id, exc)

    def _bounded(self, env: Envelope) -> Envelope:
        """``env``, or an error reply in its place when it is over the size limit."""
        if len(env.encode()) > self._max_size:
            env = Envelope(
                id=env.id,
                type="pycomms.error",
                kind="reply",
                source=env.source,
                body={"error": "reply over the size limit"},
                time=env.time,
                correlation_id=env.correlation_id,
                causation_id=env.causation_id,
                reply_to=env.reply_to,
                headers={ERROR_HEADER: "too_large"},
            )
        return env


class _Ask:
    """One request's deadline: ``cancelling`` is its task's count when it began, to
    tell the deadline's own cancellation (``cancelled``) from anyone else's."""

    __slots__ = ("cancelled", "cancelling", "finished", "future", "sending", "task")

    def __init__(self, future: asyncio.Future[Envelope], task: asyncio.Task[Any]) -> None:
        self.future = future
        self.task = task
        self.cancelling = task.cancelling()
        self.sending = False
        self.cancelled = False
        self.finished = False
        """The request ended (its deadline no longer matters)."""


class _Deadlines:
    """The deadlines of one node's requests under a single loop timer, set for the
    earliest: a request adds its deadline to a heap (no timer of its own to make and
    cancel); the timer expires the requests due and is set again for the next. Entries
    of finished requests are dropped when they reach the top, or all at once when they
    outnumber the waiting requests."""

    __slots__ = ("_at", "_heap", "_order", "_timer")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Ask]] = []
        self._order = itertools.count()  # ties are broken by arrival, never by comparing asks
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, loop: asyncio.AbstractEventLoop, when: float, ask: _Ask, waiting: int) -> None:
        """Expire ``ask`` at loop time ``when``; ``waiting``: how many requests wait now."""
        heap = self._heap
        if len(heap) > 64 and len(heap) > 2 * waiting:
            heap[:] = [entry for entry in heap if not entry[2].finished]
            heapq.heapify(heap)
        heapq.heappush(heap, (when, next(self._order), ask))
        if when < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._at = when
            self._timer = loop.call_at(when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._at = None, math.inf
        heap, now = self._heap, loop.time()
        while heap:
            when, _, ask = heap[0]
            if not ask.finished and when > now:
                self._at = when
                self._timer = loop.call_at(when, self._fire, loop)
                return
            heapq.heappop(heap)
            if not ask.finished:
                _expire(ask)

    def clear(self) -> None:
        """Forget every deadline (the bus closed: the waiting requests fail at once)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._at = None, math.inf
        self._heap.clear()


def _expire(ask: _Ask) -> None:
    """The deadline of ``ask`` passed: a waiting request wakes with `TimeoutError`; one
    still publishing is cancelled (as `asyncio.timeout` would), then told apart in `ask`.
    Its future fails too, so that a publish whose driver swallowed the cancellation
    still ends in `RequestTimeout` once it returns, not in a wait with no deadline."""
    if not ask.future.done():
        ask.future.set_exception(TimeoutError())
    if ask.sending:
        ask.cancelled = True
        ask.task.cancel()
