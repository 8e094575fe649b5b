"""Consuming one service's queue: claims under a lease, settles conditional on it.

A claim leases rows to a fresh token until ``now + visibility_timeout`` (the lease end
is the row's ``available_at``, so an expired lease simply makes the row claimable
again, as the next attempt). Ack, retry and dead-letter name the row *and* the token:
after the lease moved on they match nothing. Leases of deliveries still in the
handler are renewed every third of the visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from pycomms import OperationError, PyCommsError
from pycomms.spi import DeadLetter, Subscription, stop_tasks

from . import _observers as observers
from . import _queries as q
from ._errors import describe

if TYPE_CHECKING:
    from ._db import Database
    from ._deadline import Deadlines
    from ._options import SqlOptions
    from ._schema import Tables

log = logging.getLogger("pycomms.sql")
T = TypeVar("T")
_ADOPT_EVERY = 2.0
# Acks per statement, and how many may wait for the flusher before ack() waits too.
_ACK_BATCH = 1000
_ACK_BACKLOG = 4 * _ACK_BATCH


class SqlDelivery:
    """One leased row."""

    __slots__ = ("_receiver", "_row", "_token", "attempt", "data")

    def __init__(self, receiver: SqlReceiver, row: q.Claimed, token: str) -> None:
        self._receiver = receiver
        self._row = row.id
        self._token = token
        self.data = row.data
        self.attempt = row.attempt

    async def ack(self) -> None:
        if self._receiver._forget(self._token, self._row):
            await self._receiver._ack_soon(self._token, self._row)

    async def retry(self, delay: float) -> None:
        if self._receiver._forget(self._token, self._row):
            await self._receiver._settling(self._token, self._row, self._receiver._retry(self._token, self._row, delay))

    async def dead_letter(self, letter: DeadLetter) -> None:
        if self._receiver._forget(self._token, self._row):
            await self._receiver._settling(
                self._token, self._row, self._receiver._dead_letter(self._token, self._row, letter)
            )


class Owner(Protocol):
    """What a receiver uses of the transport that made it (`SqlTransport`)."""

    @property
    def db(self) -> Database: ...

    @property
    def tables(self) -> Tables: ...

    @property
    def options(self) -> SqlOptions: ...

    @property
    def deadlines(self) -> Deadlines: ...

    @property
    def node_id(self) -> str: ...

    @property
    def idle_poll(self) -> float: ...

    def wake_service(self, service: str) -> None: ...

    def forget_receiver(self, receiver: SqlReceiver) -> None: ...


class SqlReceiver:
    """The receiver of one `Subscription` on one transport."""

    def __init__(self, transport: Owner, subscription: Subscription, routed: Sequence[str]) -> None:
        self._t = transport
        self._service = subscription.service
        self._ephemeral = subscription.ephemeral
        self._routed = list(routed)
        self._types = subscription.events | subscription.commands
        self._wake = asyncio.Event()
        self._closed = False
        self._leases: dict[str, set[int]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._unacked: list[tuple[str, int]] = []
        self._acking: asyncio.Task[None] | None = None
        self._acked = asyncio.Event()
        self._last_adopt = time.monotonic()
        self._working: asyncio.Task[Any] | None = None
        self._renewer = asyncio.create_task(self._renew_loop(), name=f"pycomms-sql:{self._service}:renew")

    @property
    def service(self) -> str:
        return self._service

    @property
    def types(self) -> frozenset[str]:
        return self._types

    def wake(self) -> None:
        self._wake.set()

    # receiving -------------------------------------------------------------------------

    async def receive(self, max_messages: int) -> Sequence[SqlDelivery]:
        opts = self._t.options
        delay, idle = opts.poll_min, self._t.idle_poll
        while not self._closed:
            self._wake.clear()
            deliveries = await self._to_the_end(self._claim_rows(max_messages))
            if deliveries:
                return deliveries
            if self._routed and time.monotonic() - self._last_adopt >= _ADOPT_EVERY:
                await self._to_the_end(self._adopt())
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            delay = min(delay * 2, idle)
        return []

    async def _to_the_end(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work``, a database step of `receive`, in a task of its own to its end.

        A cancelled receive() returns at once while the step finishes: a claim records
        its leases itself, so close() (which waits for the step) releases them instead
        of leaving them to expire. And the cancellation never reaches the driver, which
        could swallow it (see `_tasks`): receive() always stops when cancelled.
        """
        self._working = task = asyncio.create_task(work)
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._working = None

    async def _claim_rows(self, limit: int) -> list[SqlDelivery]:
        t = self._t
        token = uuid.uuid4().hex
        rows = await t.deadlines.run(
            f"claiming messages of {self._service} from", OperationError, self._claim(limit, token)
        )
        if not rows:
            return []
        self._leases[token] = {row.id for row in rows}
        return [SqlDelivery(self, row, token) for row in rows]

    async def _claim(self, limit: int, token: str) -> list[q.Claimed]:
        t = self._t
        now = time.time()
        if t.db.kind == "sqlite":
            # A cheap read first: an empty poll must not take SQLite's write lock.
            async with t.db.read() as conn:
                if not await q.has_ready(conn, t.tables, self._service, now):
                    return []

        async def body(conn: AsyncConnection) -> list[q.Claimed]:
            return await q.claim(
                conn, t.db.kind, t.tables, self._service, limit, token, now, now + t.options.visibility_timeout
            )

        # MariaDB claims in two statements, which need a transaction.
        return await (t.db.run_write(body) if t.db.kind == "mysql" else t.db.run_settle(body))

    async def _adopt(self) -> None:
        self._last_adopt = time.monotonic()
        t = self._t

        async def adopt() -> int:
            async with t.db.read() as conn:
                if not await q.has_waiting_commands(conn, t.tables, self._routed):
                    return 0

            async def body(conn: AsyncConnection) -> int:
                return await q.adopt(conn, t.tables, self._service, self._routed)

            return await t.db.run_write(body)

        moved = await t.deadlines.run(f"routing waiting commands to {self._service} on", OperationError, adopt())
        if moved:
            log.debug("service %s: took over %d command(s) sent before it subscribed", self._service, moved)

    # settling --------------------------------------------------------------------------

    def _forget(self, token: str, row: int) -> bool:
        """Drop a lease locally; False if it was already settled or released."""
        rows = self._leases.get(token)
        if rows is None or row not in rows:
            return False
        rows.discard(row)
        if not rows:
            del self._leases[token]
        return True

    async def _settling(self, token: str, row: int, settle: Coroutine[Any, Any, Any]) -> None:
        """Run ``settle``; if it is cancelled, keep the lease for close() to release
        (a release after a settle that did commit matches nothing). A settle that
        fails or passes its deadline is logged and left to the lease: the message is
        delivered again when it expires (at-least-once), as after a crash."""
        try:
            await settle
        except asyncio.CancelledError:
            if not self._closed:
                self._leases.setdefault(token, set()).add(row)
            raise
        except PyCommsError as exc:
            log.warning("%s; the message is delivered again when its lease expires", exc)

    async def _ack_soon(self, token: str, row: int) -> None:
        """Queue an ack for the background flusher and return (`Delivery.ack` allows it).

        The handler's slot is free at once, so the next claim need not wait for the
        ack's round trip, and acks of a whole claim go in one statement however the
        core schedules its workers. Only when the flusher falls far behind does the
        caller wait for it (memory stays bounded). A flush that fails is one warning:
        its messages are delivered again when their leases expire (at-least-once).
        `close` waits for the queue to be flushed."""
        self._unacked.append((token, row))
        if self._acking is None:
            self._acking = asyncio.create_task(self._send_acks(), name=f"pycomms-sql:{self._service}:acks")
        while len(self._unacked) >= _ACK_BACKLOG and self._acking is not None:
            self._acked.clear()
            await self._acked.wait()

    async def _send_acks(self) -> None:
        try:
            while self._unacked:
                batch = self._unacked[:_ACK_BATCH]
                del self._unacked[:_ACK_BATCH]
                try:
                    await self._flush_acks(batch)
                except PyCommsError as exc:
                    log.warning("%s; %d message(s) are delivered again when their leases expire", exc, len(batch))
                finally:
                    self._acked.set()
        finally:
            self._acking = None
            self._acked.set()

    async def _flush_acks(self, items: list[tuple[str, int]]) -> None:
        leases: dict[str, list[int]] = {}
        for token, row in items:
            leases.setdefault(token, []).append(row)
        t = self._t

        async def body(conn: AsyncConnection) -> int:
            return await q.ack(conn, t.db.kind, t.tables, leases)

        await t.deadlines.run(f"acknowledging messages of {self._service} on", OperationError, t.db.run_settle(body))

    async def _retry(self, token: str, row: int, delay: float) -> None:
        t = self._t
        when = time.time() + max(0.0, delay)

        async def body(conn: AsyncConnection) -> int:
            return await q.reschedule(conn, t.db.kind, t.tables, {token: [row]}, when)

        await t.deadlines.run(f"scheduling a retry of {self._service} on", OperationError, t.db.run_settle(body))
        self._wake_later(delay)

    async def _dead_letter(self, token: str, row: int, letter: DeadLetter) -> None:
        t = self._t
        data, now = letter.to_json(), time.time()

        async def body(conn: AsyncConnection) -> bool:
            return await q.dead_letter(conn, t.db.kind, t.tables, row, token, self._service, letter.id, data, now)

        await t.deadlines.run(f"dead-lettering a message of {self._service} on", OperationError, t.db.run_write(body))

    def _wake_later(self, delay: float) -> None:
        if delay <= 0:
            self._wake.set()
            return
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self._wake.set()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    # leases ----------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        t = self._t
        interval = t.options.visibility_timeout / 3
        while True:
            await asyncio.sleep(interval)
            leases = {token: sorted(rows) for token, rows in self._leases.items() if rows}
            if not leases:
                continue
            until = time.time() + t.options.visibility_timeout

            async def body(conn: AsyncConnection, leases: dict[str, list[int]] = leases, until: float = until) -> int:
                return await q.renew(conn, t.db.kind, t.tables, leases, until)

            try:
                await t.deadlines.run(f"renewing leases of {self._service} on", OperationError, t.db.run_settle(body))
            except Exception as exc:
                log.warning("service %s: could not renew leases (they may expire): %s", self._service, exc)

    async def close(self) -> None:
        """Stop receiving; give unsettled deliveries back for another instance at once.

        Within the close budget (`_deadline.CLOSE_BUDGET`) even on a silent server:
        what is not released by then is redelivered when its lease expires."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._t.forget_receiver(self)
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        loop = asyncio.get_running_loop()
        until = loop.time() + self._t.deadlines.close_budget
        await stop_tasks([self._renewer], recancel_after=0.1, give_up_after=max(0.1, until - loop.time()))
        working, self._working = self._working, None
        if working is not None:  # a claim records its leases: wait for it, to release them
            await asyncio.wait((working,), timeout=max(0.0, until - loop.time()))
            if not working.done():
                await stop_tasks([working], recancel_after=0.1, give_up_after=0.5)
            elif not working.cancelled():
                working.exception()
        acking = self._acking
        if acking is not None:  # acks queued by handlers that finished
            await asyncio.wait((acking,), timeout=max(0.0, until - loop.time()))
            if not acking.done():
                await stop_tasks([acking], recancel_after=0.1, give_up_after=0.5)
        if self._unacked:  # the flush did not finish within the close budget
            log.warning(
                "%s: %d handled message(s) not acknowledged before close; delivered again once their leases expire",
                self._service,
                len(self._unacked),
            )
            self._unacked.clear()
        if self._ephemeral:
            self._leases.clear()
            await self._remove_observer(max(0.1, until - loop.time()))
            return
        leases = {token: sorted(rows) for token, rows in self._leases.items() if rows}
        self._leases.clear()
        if not leases:
            return
        t = self._t

        async def body(conn: AsyncConnection) -> int:
            return await q.reschedule(conn, t.db.kind, t.tables, leases, time.time())

        try:
            released: int = await t.deadlines.within(max(0.1, until - loop.time()), t.db.run_settle(body))
        except Exception as exc:
            log.warning(
                "service %s: could not release unsettled messages (redelivered after the lease): %s",
                self._service,
                "timed out" if isinstance(exc, TimeoutError) else describe(exc),
            )
            return
        log.debug("service %s: released %d unsettled message(s)", self._service, released)
        t.wake_service(self._service)

    async def _remove_observer(self, seconds: float) -> None:
        """An ephemeral service leaves nothing behind: subscription, messages, letters."""
        t = self._t
        node_id = t.node_id

        async def body(conn: AsyncConnection) -> bool:
            return await observers.remove(conn, t.tables, self._service, node_id)

        try:
            await t.deadlines.within(seconds, t.db.run_write(body))
        except Exception as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
            log.warning("ephemeral service %s: could not remove its rows (swept later): %s", self._service, why)
