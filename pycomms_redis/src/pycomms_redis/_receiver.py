"""One service instance consuming its streams through the service's consumer group.

A delivery is a pending entry of the group owned by this node's consumer. Its lease
is the entry's idle time in the pending entries list: a background task renews the
leases of every delivery still held (so a live slow handler keeps its message), and
entries idle past the visibility timeout are taken over with XAUTOCLAIM by whichever
instance looks first. Settling checks ownership on the server (see `_scripts`), so
an ack that comes after the lease moved on settles nothing.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from redis import exceptions as rex
from redis.asyncio import Redis

from pycomms import OperationError, PyCommsError
from pycomms.spi import DeadLetter, Subscription, new_id

from ._batcher import Batcher
from ._deadline import CloseSteps, Deadlines
from ._errors import TRANSIENT, describe, is_nogroup
from ._keys import Keys
from ._options import RedisOptions
from ._scripts import CLAIM, RELEASE_ALL, RENEW, SETTLE, TRIM
from ._tasks import cancel_and_wait

log = logging.getLogger("pycomms.redis")
T = TypeVar("T")

Op = tuple[str, str, str, int, Any, Any, Any]
"""A settle operation: stream, kind (a/r/d), entry id, delivery counter, three payloads."""

RetryScheduled = Callable[[float], None]


class RedisDelivery:
    """One pending entry held by this node; settled at most once."""

    __slots__ = ("_receiver", "_settled", "attempt", "count", "data", "entry_id", "lost", "malformed", "stream")

    def __init__(
        self, receiver: RedisReceiver, stream: str, entry_id: str, count: int, data: bytes, attempt: int
    ) -> None:
        self._receiver = receiver
        self._settled = False
        self.stream = stream
        self.entry_id = entry_id
        self.count = count
        self.data = data
        self.attempt = attempt
        self.lost = False  # the lease moved on (renewal found another owner)
        self.malformed: str | None = None  # why the entry holds no envelope, if it does not

    def __repr__(self) -> str:
        return f"<RedisDelivery {self.stream} {self.entry_id} attempt={self.attempt}>"

    async def ack(self) -> None:
        await self._receiver._settle(self, "a", None, None, None)

    async def retry(self, delay: float) -> None:
        await self._receiver._settle(self, "r", max(0, round(delay * 1000)), self.attempt + 1, self.data)

    async def dead_letter(self, letter: DeadLetter) -> None:
        # The envelope travels in its own field (raw), not base64 inside the letter.
        stored = dataclasses.replace(letter, envelope=b"")
        await self._receiver._settle(self, "d", letter.id, stored.to_json(), letter.envelope or self.data)


class RedisReceiver:
    """The `Receiver` of one subscription: reads, claims, renews, settles, trims."""

    def __init__(
        self,
        client: Redis,
        keys: Keys,
        options: RedisOptions,
        subscription: Subscription,
        streams: list[tuple[str, str]],
        consumer: str,
        on_retry: RetryScheduled,
        deadlines: Deadlines,
        close_steps: CloseSteps,
    ) -> None:
        self._client = client
        self._deadlines = deadlines
        self._close_steps = close_steps
        self._keys = keys
        self._options = options
        self._service = subscription.service
        self._group = subscription.service
        self._ephemeral = subscription.ephemeral
        self._events = sorted(subscription.events)
        self._consumer = consumer
        self._on_retry = on_retry
        self._service_stream = keys.service_stream(self._service)
        #: (stream, id to create the group at): events start at "$", everything else at "0"
        self._stream_starts = streams
        self._streams = [name for name, _ in streams]
        self._read_from: dict[Any, Any] = {name: ">" for name in self._streams}
        self._cursors = dict.fromkeys(self._streams, "0-0")
        self._static_keys = [self._service_stream, keys.dead_letters(self._service), keys.delayed]
        self._buffer: collections.deque[RedisDelivery] = collections.deque()
        self._leases: dict[tuple[str, str], RedisDelivery] = {}
        self._closed = False
        self._inflight: asyncio.Task[Any] | None = None
        self._next_claim = 0.0
        self._failing = False
        self._claim_interval = min(options.visibility_timeout / 2, 2.0)
        self._settle_script = client.register_script(SETTLE)
        self._renew_script = client.register_script(RENEW)
        self._claim_script = client.register_script(CLAIM)
        self._release_script = client.register_script(RELEASE_ALL)
        self._trim_script = client.register_script(TRIM)
        self._settler: Batcher[Op, int] = Batcher(
            self._flush_settles, options.max_batch, f"pycomms:{self._service}:settle"
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    async def setup(self) -> None:
        """Create the consumer groups (idempotent); run again if the server lost them."""
        async with self._client.pipeline(transaction=False) as pipe:
            for stream, start in self._stream_starts:
                pipe.xgroup_create(stream, self._group, id=start, mkstream=True)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not str(result).startswith("BUSYGROUP"):
                raise result

    def start(self) -> None:
        name = f"pycomms:{self._service}"
        self._tasks = [
            asyncio.create_task(self._renew_loop(), name=f"{name}:renew"),
            asyncio.create_task(self._trim_loop(), name=f"{name}:trim"),
        ]

    # receiving -------------------------------------------------------------------------

    async def receive(self, max_messages: int) -> Sequence[RedisDelivery]:
        backoff = _Backoff()
        loop = asyncio.get_running_loop()
        while not self._closed:
            if self._buffer:
                taken = await self._screen(self._take(max_messages))
                if taken:
                    return taken
                continue
            try:
                if loop.time() >= self._next_claim:
                    self._next_claim = loop.time() + self._claim_interval
                    claimed = await self._until_closed(self._claim(max_messages))
                    if claimed:
                        self._buffer.extend(claimed)
                        continue
                read = await self._until_closed(self._read(max_messages))
            except TRANSIENT as exc:
                await self._pause(backoff.next(), f"read failed ({describe(exc)}); reconnecting")
                continue
            except rex.ResponseError as exc:
                if is_nogroup(exc):
                    log.warning("service %s: consumer group missing (server data lost?); recreating it", self._service)
                    await self._recreate(backoff)
                else:
                    await self._pause(backoff.next(), f"read failed ({describe(exc)})")
                continue
            backoff.reset()
            if self._failing:
                self._failing = False
                log.info("service %s: reading works again", self._service)
            if read:
                self._buffer.extend(read)
        return []

    def _take(self, max_messages: int) -> list[RedisDelivery]:
        count = min(max_messages, len(self._buffer))
        return [self._buffer.popleft() for _ in range(count)]

    async def _read(self, count: int) -> list[RedisDelivery]:
        block = round(self._options.block * 1000)
        response: Any = await self._client.xreadgroup(self._group, self._consumer, self._read_from, count, block)
        out: list[RedisDelivery] = []
        for stream_name, entries in response or ():
            stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
            for entry_id, fields in entries:
                out.append(self._lease(stream, entry_id, 1, fields or {}))
        return out

    async def _claim(self, budget: int) -> list[RedisDelivery]:
        vt_ms = round(self._options.visibility_timeout * 1000)
        args: list[Any] = [self._group, self._consumer, vt_ms, budget, *(self._cursors[s] for s in self._streams)]
        result: Any = await self._claim_script(keys=self._streams, args=args)
        out: list[RedisDelivery] = []
        for stream, (cursor, entries, counts) in zip(self._streams, result, strict=True):
            self._cursors[stream] = _text(cursor)
            for (entry_id, flat), count in zip(entries, counts, strict=True):
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                out.append(self._lease(stream, entry_id, int(count), fields))
        if out:
            log.info("service %s: took over %d message(s) whose consumer went silent", self._service, len(out))
        return out

    def _lease(self, stream: str, entry_id: bytes | str, count: int, fields: dict[Any, Any]) -> RedisDelivery:
        ident = _text(entry_id)
        base = fields.get(b"a")
        data = fields.get(b"d")
        delivery = RedisDelivery(self, stream, ident, count, data or b"", (int(base) if base else 1) + count - 1)
        if data is None:
            names = ", ".join(repr(_text(name)) for name in list(fields)[:10]) or "none"
            delivery.malformed = (
                f"redis stream entry {ident} of {stream} has no field 'd' (the encoded envelope); its fields: {names}"
            )
        old = self._leases.get((stream, ident))
        if old is not None:
            old.lost = True  # we took back our own stale entry: the older delivery is void
        self._leases[(stream, ident)] = delivery
        return delivery

    async def _screen(self, deliveries: list[RedisDelivery]) -> list[RedisDelivery]:
        """``deliveries`` without the entries that hold no envelope: those go straight to
        the dead letters as ``malformed`` (written by another program, or by hand)."""
        good = [d for d in deliveries if d.malformed is None]
        for delivery in deliveries:
            if delivery.malformed is not None:
                await self._dead_letter_malformed(delivery, delivery.malformed)
        return good

    async def _dead_letter_malformed(self, delivery: RedisDelivery, error: str) -> None:
        kind, _, type_name = delivery.stream.removeprefix(self._keys.prefix).partition(":")
        letter = DeadLetter(
            id=new_id(),
            type=type_name if kind in ("ev", "cmd") else "?",
            service=self._service,
            reason="malformed",
            error=error,
            attempts=delivery.attempt,
            failed_at=time.time(),
        )
        try:
            await delivery.dead_letter(letter)
        except PyCommsError as exc:
            log.warning("service %s: %s; dead-lettering it failed (%s), it comes back later", self._service, error, exc)
            return
        log.warning(
            "dead letter: service=%s type=%s id=%s reason=malformed attempts=%d error=%s",
            self._service,
            letter.type,
            letter.id,
            letter.attempts,
            error,
        )

    async def _until_closed(self, coro: Coroutine[Any, Any, T]) -> T | None:
        """Run ``coro`` so that `close` can interrupt it; None if it did."""
        task = asyncio.create_task(coro)
        task.add_done_callback(_retrieve)
        self._inflight = task
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            # The read may still complete (a cancel can land too late): what it leased
            # waits in the buffer for the next receive, or is released by close().
            task.cancel()
            task.add_done_callback(self._keep_orphans)
            raise
        if task.cancelled():
            return None
        return task.result()

    def _keep_orphans(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        result = task.result()
        if isinstance(result, list) and not self._closed:
            self._buffer.extend(result)

    async def _pause(self, seconds: float, why: str) -> None:
        # One warning per outage; the retries that follow are logged at debug level.
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        log.log(level, "service %s: %s; next try in %.1fs", self._service, why, seconds)
        await self._until_closed(asyncio.sleep(seconds))

    async def _recreate(self, backoff: _Backoff) -> None:
        try:
            await self.setup()
        except (rex.RedisError, OSError) as exc:
            await self._pause(backoff.next(), f"recreating the consumer group failed ({describe(exc)})")

    # settling --------------------------------------------------------------------------

    async def _settle(self, delivery: RedisDelivery, kind: str, p1: Any, p2: Any, p3: Any) -> None:
        if delivery._settled:
            return
        delivery._settled = True
        key = (delivery.stream, delivery.entry_id)
        if delivery.lost or self._leases.get(key) is not delivery:
            log.info("service %s: %s settles nothing, its lease moved on", self._service, delivery)
            self._release_lease(delivery)
            return
        op: Op = (delivery.stream, kind, delivery.entry_id, delivery.count, p1, p2, p3)
        if kind == "a":
            # Acks are sent in the background (like AMQP's basic.ack) so the handler slot
            # frees at once and acks of many handlers share a round trip; close() waits
            # for them. The lease stays renewed until the server confirmed.
            self._ack_in_background(delivery, op, asyncio.get_running_loop().time() + self._options.operation_timeout)
            return
        try:
            [done] = await self._settle_with_retries(op)
            if not done:
                log.info("service %s: %s settles nothing, its lease moved on", self._service, delivery)
            elif kind == "r":
                self._on_retry(p1 / 1000)
        finally:
            self._release_lease(delivery)

    def _ack_in_background(self, delivery: RedisDelivery, op: Op, deadline: float) -> None:
        if self._closed:  # a retry timer that fired after close: the release took care of it
            self._release_lease(delivery)
            return

        def acked(future: asyncio.Future[list[int]]) -> None:
            if future.cancelled():
                self._release_lease(delivery)
                return
            exc = future.exception()
            if exc is None:
                if not future.result()[0]:
                    log.info("service %s: %s settles nothing, its lease moved on", self._service, delivery)
                self._release_lease(delivery)
            elif isinstance(exc, TRANSIENT) and not self._closed and asyncio.get_running_loop().time() < deadline:
                # Sending an ack twice is harmless: the second finds the entry settled.
                asyncio.get_running_loop().call_later(0.1, self._ack_in_background, delivery, op, deadline)
            else:
                log.warning("service %s: ack of %s failed (%s); it will be redelivered", self._service, delivery, exc)
                self._release_lease(delivery)

        self._settler.enqueue([op]).add_done_callback(acked)

    def _release_lease(self, delivery: RedisDelivery) -> None:
        key = (delivery.stream, delivery.entry_id)
        if self._leases.get(key) is delivery:
            del self._leases[key]

    async def _settle_with_retries(self, op: Op) -> list[int]:
        # Settling twice is harmless (the second finds the entry gone and does nothing),
        # so a settle whose reply was lost is simply sent again, until operation_timeout.
        deadline = asyncio.get_running_loop().time() + self._options.operation_timeout

        async def settle() -> list[int]:
            return await self._settler.submit([op])

        operation = f"settling a message of service {self._service!r} on"
        return await self._deadlines.call(operation, settle, deadline=deadline)

    async def _flush_settles(self, ops: list[Op]) -> list[int]:
        keys = list(self._static_keys)
        index: dict[str, int] = {}
        args: list[Any] = [self._group, self._consumer]
        for stream, kind, entry_id, count, p1, p2, p3 in ops:
            position = index.get(stream)
            if position is None:
                keys.append(stream)
                position = index[stream] = len(keys)
            args += (f"{kind}{position}", entry_id, count)
            if kind != "a":
                args += (p1, p2, p3)
        result: Any = await self._settle_script(keys=keys, args=args)
        return [int(r) for r in result]

    # leases, trimming, close -------------------------------------------------------------

    async def _renew_loop(self) -> None:
        period = self._options.visibility_timeout / 3
        while True:
            await asyncio.sleep(period)
            held = list(self._leases.values())
            for start in range(0, len(held), self._options.max_batch):
                chunk = held[start : start + self._options.max_batch]
                args: list[Any] = [self._group, self._consumer]
                for delivery in chunk:
                    args += (delivery.entry_id, delivery.count)
                try:
                    result: Any = await self._renew_script(keys=[d.stream for d in chunk], args=args)
                except (rex.RedisError, OSError) as exc:
                    log.warning("service %s: renewing %d lease(s) failed: %s", self._service, len(chunk), describe(exc))
                    break
                for delivery, kept in zip(chunk, result, strict=True):
                    if not int(kept) and not delivery._settled:
                        delivery.lost = True
                        log.warning("service %s: lost the lease of %s (taken over)", self._service, delivery)

    async def _trim_loop(self) -> None:
        max_idle = round(max(10 * self._options.visibility_timeout, 600.0) * 1000)
        while True:
            await asyncio.sleep(self._options.trim_interval)
            try:
                trimmed = await self._trim_script(keys=self._streams, args=[max_idle])
                log.debug("service %s: trimmed %s acknowledged entries", self._service, trimmed)
            except (rex.RedisError, OSError) as exc:
                log.warning("service %s: trimming failed: %s", self._service, describe(exc))

    async def close(self) -> None:
        """Stop reading; hand every entry this consumer still holds back to the service.
        Each network step is bounded (`CloseSteps`): on a silent server, what is held
        returns to the service after the visibility timeout instead."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait([self._inflight, *self._tasks])
        steps = self._close_steps
        if not await self._settler.close(steps.bound(), self._unsettled_error):
            steps.silent = True
            log.warning("service %s: closing: settles still unconfirmed were abandoned", self._service)
        for delivery in self._leases.values():
            delivery.lost = True
        self._leases.clear()
        self._buffer.clear()
        if self._ephemeral:
            consequence = "another node sweeps them"
            await steps.run(f"removing the groups of ephemeral service {self._service}", consequence, self._remove())
            return
        await steps.run(
            f"service {self._service}: releasing held messages",
            "they return after the visibility timeout",
            self._release(),
        )

    def _unsettled_error(self) -> OperationError:
        return OperationError(
            f"redis: settling a message of service {self._service!r} on {self._deadlines.server} abandoned at close"
        )

    async def _release(self) -> None:
        released = await self._release_script(
            keys=[self._service_stream, *self._streams], args=[self._group, self._consumer]
        )
        if released:
            log.info("service %s: released %s unsettled message(s) for redelivery", self._service, released)

    async def _remove(self) -> None:
        """An ephemeral service leaves nothing behind: its groups, streams, registration."""
        await remove_observer(self._client, self._keys, self._service, self._events)


async def remove_observer(client: Redis, keys: Keys, service: str, events: Sequence[str]) -> None:
    """Destroy the consumer groups of ephemeral ``service`` and delete its own streams."""
    async with client.pipeline(transaction=False) as pipe:
        for type_name in events:
            pipe.xgroup_destroy(keys.event_stream(type_name), service)
        pipe.delete(keys.service_stream(service), keys.dead_letters(service))
        pipe.hdel(keys.observers, service)
        await pipe.execute(raise_on_error=False)


class _Backoff:
    """Exponential reconnect delays: 0.1 s doubling up to 2 s."""

    def __init__(self) -> None:
        self._delay = 0.05

    def next(self) -> float:
        self._delay = min(self._delay * 2, 2.0)
        return self._delay

    def reset(self) -> None:
        self._delay = 0.05


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # mark it retrieved; receive() reads it when it still waits


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
