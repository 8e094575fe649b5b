"""Consuming one service: a pull consumer per subject it reads, one pull request open
per consumer at a time, all answered on one inbox of this receiver.

NATS 2.9 gives a consumer one filter subject, so a service reading several message
types has several consumers; `receive` asks each idle one for a share of the free
handler slots (at least one; one only for a consumer whose last request expired empty),
so it never holds more than ``max_messages`` plus one message per extra consumer.
Every delivery not yet settled, handed out or waiting, keeps its lease with ``+WPI``
(in progress) every third of ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from pycomms import OperationError
from pycomms.spi import DeadLetter, Subscription, describe_error, stop_tasks

from ._connection import CLOSE_STEP, DRIVER_ERRORS, STEP_ERRORS, Link
from ._names import Names
from ._options import NatsOptions

log = logging.getLogger("pycomms.nats")

StoreLetter = Callable[[str, DeadLetter, str], Awaitable[None]]
"""Stores a dead letter: (service, letter, a Nats-Msg-Id unique to the delivery)."""

_NOT_UNIQUE_ON_WORKQUEUE = 10100
_inboxes = itertools.count()


@dataclass(slots=True)
class Pull:
    """One consumer this receiver reads, and its open pull request (if any)."""

    stream: str
    subject: str
    name: str
    inbox: str
    left: int = 0
    """Messages the open request may still bring (0: no request open)."""
    until: float = 0.0
    """Loop time after which an open request counts as lost (a reconnect drops it)."""
    rare: bool = False
    """Carries little (the replay subject): asks for one message at a time."""
    got: int = 0
    """Messages the open (or last) request brought."""
    cold: bool = False
    """Its last request expired without a message: it asks for one at a time until one
    comes, leaving the free slots to the consumers that have work."""


class NatsDelivery:
    """One delivery; its ack subject (``$JS.ACK....``) identifies it on the server."""

    __slots__ = ("_receiver", "attempt", "data", "reply")

    def __init__(self, data: bytes, attempt: int, reply: str, receiver: NatsReceiver) -> None:
        self.data = data
        self.attempt = attempt
        self.reply = reply
        self._receiver = receiver

    async def ack(self) -> None:
        await self._receiver.settle(self, b"+ACK")

    async def retry(self, delay: float) -> None:
        await self._receiver.settle(self, b'-NAK {"delay":%d}' % int(max(delay, 0.0) * 1e9))

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self._receiver.dead_letter(self, letter)


def delivery_count(reply: str) -> int:
    """The delivery count in a JetStream ack subject (v1 and v2 layouts), 1 if unreadable."""
    tokens = reply.split(".")
    index = 4 if len(tokens) == 9 else 6 if len(tokens) >= 11 else -1
    try:
        return max(int(tokens[index]), 1) if index > 0 else 1
    except ValueError:
        return 1


class NatsReceiver:
    """The `Receiver` of one service on one bus."""

    def __init__(
        self, link: Link, names: Names, options: NatsOptions, subscription: Subscription, store: StoreLetter
    ) -> None:
        self._link = link
        self._names = names
        self._options = options
        self._subscription = subscription
        self._store = store
        self._inbox = f"_INBOX.pycomms.{hashlib.sha1(str(id(self)).encode()).hexdigest()[:10]}{next(_inboxes)}"
        self._pulls: list[Pull] = []
        self._ready: deque[NatsDelivery] = deque()
        self._unsettled: dict[str, NatsDelivery] = {}
        self._wanted = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._subs: list[Any] = []
        self._renewer: asyncio.Task[None] | None = None

    # set-up ------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create (or find) the consumers and subscribe to the inbox; idempotent."""
        sub, names = self._subscription, self._names
        wanted = [(names.events_stream, names.event(t), DeliverPolicy.NEW, False) for t in sorted(sub.events)]
        wanted += [(names.work_stream, names.command(t), DeliverPolicy.ALL, False) for t in sorted(sub.commands)]
        if not sub.ephemeral:
            wanted.append((names.work_stream, names.service(sub.service), DeliverPolicy.ALL, True))
        pulls: list[Pull] = []
        for stream, subject, policy, rare in wanted:
            name = await self._consumer(stream, subject, policy)
            if name is not None:
                pulls.append(Pull(stream, subject, name, f"{self._inbox}.{len(pulls)}", rare=rare))
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = [await self._link.client.subscribe(p.inbox, cb=self._on_message_of(p)) for p in pulls]
        self._pulls = pulls

    async def _consumer(self, stream: str, subject: str, policy: DeliverPolicy) -> str | None:
        sub, options = self._subscription, self._options
        durable = None if sub.ephemeral else self._names.consumer(sub.service, subject)
        config = ConsumerConfig(
            durable_name=durable,
            name=durable,
            filter_subject=subject,
            deliver_policy=policy,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=options.visibility_timeout,
            max_deliver=-1,
            max_ack_pending=10_000,
            inactive_threshold=max(10.0, 5 * options.fetch_wait) if sub.ephemeral else None,
            description=f"pycomms service {sub.service}",
        )
        try:
            info = await self._link.js.add_consumer(stream, config=config)
        except BadRequestError as exc:
            if exc.err_code == _NOT_UNIQUE_ON_WORKQUEUE:
                log.warning(
                    "service %s handles %s, but another service already consumes that subject "
                    "(first come, first served); this service will not receive it",
                    sub.service,
                    subject,
                )
                return None
            if durable is None:
                raise
            info = await self._link.js.consumer_info(stream, durable)  # exists with another configuration
            log.info("consumer %s of stream %s exists with another configuration (%s); using it", durable, stream, exc)
        return str(info.name)

    @property
    def service(self) -> str:
        return self._subscription.service

    async def backlog(self) -> int:
        """Messages waiting in this receiver's consumers, not yet delivered to any
        instance: each consumer's ``num_pending`` (one consumer-info request each; what
        is being handled or waits for a delayed retry is ``num_ack_pending``, not counted)."""
        total = 0
        for pull in self._pulls:
            info = await self._link.js.consumer_info(pull.stream, pull.name)
            total += int(info.num_pending or 0)
        return total

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew(), name=f"pycomms:nats:{self._subscription.service}:leases")
        self._link.on_reconnect(self._lost_pulls)

    # receiving ---------------------------------------------------------------------------

    def _on_message_of(self, pull: Pull) -> Callable[[Msg], Awaitable[None]]:
        """The inbox callback of ``pull`` (a delivery keeps its original subject: the
        subscription, not the subject, tells which consumer it came from)."""

        async def on_message(msg: Msg) -> None:
            await self._on_message(pull, msg)

        return on_message

    async def _on_message(self, pull: Pull, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is not None or not msg.reply:
            if status != "100":  # 404/408/409: this request is over
                pull.left = 0
                if status == "408":  # expired
                    pull.cold = pull.got == 0
                if status == "409" and "Deleted" in headers.get("Description", ""):
                    log.warning("consumer %s of service %s was deleted", pull.name, self._subscription.service)
            self._wakeup.set()
            return
        if pull.left > 0:
            pull.left -= 1
        pull.got += 1
        pull.cold = False
        if self._closed:
            await self._link.client.publish(msg.reply, b"-NAK")
            return
        delivery = NatsDelivery(msg.data, delivery_count(msg.reply), msg.reply, self)
        self._unsettled[msg.reply] = delivery
        self._ready.append(delivery)
        self._wakeup.set()

    def _lost_pulls(self) -> None:
        for pull in self._pulls:
            pull.left = 0
        self._wakeup.set()

    async def receive(self, max_messages: int) -> Sequence[NatsDelivery]:
        loop = asyncio.get_running_loop()
        while not self._closed:
            ready = self._ready
            if ready:
                self._wanted = 0
                return [ready.popleft() for _ in range(min(max_messages, len(ready)))]
            self._wanted = max_messages
            self._wakeup.clear()
            await self._pump(loop.time())
            if self._ready or self._closed:
                continue
            try:
                async with asyncio.timeout(self._options.fetch_wait + 1.0):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
        return []

    async def _pump(self, now: float) -> None:
        """Open a pull request on every consumer that has none, sharing the free slots
        among those with work (a cold consumer and the rarely used replay one ask for one)."""
        pulls = self._pulls
        for pull in pulls:
            if pull.left and now > pull.until:
                pull.left = 0
        idle = [pull for pull in pulls if not pull.left]
        if not idle:
            return
        credit = self._wanted - len(self._ready) - sum(pull.left for pull in pulls)
        small = sum(1 for pull in idle if pull.rare or pull.cold)
        busy = len(idle) - small
        share = max(1, (credit - small) // busy) if busy else 1
        expires = int(self._options.fetch_wait * 1e9)
        client, api = self._link.client, self._link.api
        try:
            for pull in idle:
                batch = 1 if pull.rare or pull.cold else share
                pull.left, pull.got, pull.until = batch, 0, now + self._options.fetch_wait + 1.0
                request = b'{"batch":%d,"expires":%d}' % (batch, expires)
                await client.publish(f"{api}.CONSUMER.MSG.NEXT.{pull.stream}.{pull.name}", request, pull.inbox)
        except DRIVER_ERRORS as exc:
            for pull in idle:
                pull.left = 0
            raise OperationError(f"nats: pull request on {self._link.server} failed: {describe_error(exc)}") from exc

    async def _renew(self) -> None:
        period = self._options.visibility_timeout / 3
        while True:
            await asyncio.sleep(period)
            try:
                for reply in list(self._unsettled):
                    await self._link.client.publish(reply, b"+WPI")
            except DRIVER_ERRORS as exc:
                log.warning("nats: renewing leases on %s failed: %s", self._link.server, describe_error(exc))

    # settling ----------------------------------------------------------------------------

    async def settle(self, delivery: NatsDelivery, verdict: bytes) -> None:
        """Send ``verdict`` for ``delivery`` unless it was already released or settled."""
        if self._unsettled.pop(delivery.reply, None) is None:
            return
        try:
            await self._link.client.publish(delivery.reply, verdict)
        except DRIVER_ERRORS as exc:
            raise OperationError(
                f"nats: settling a delivery on {self._link.server} failed ({describe_error(exc)}); "
                "it is redelivered after the lease"
            ) from exc

    async def dead_letter(self, delivery: NatsDelivery, letter: DeadLetter) -> None:
        if delivery.reply not in self._unsettled:
            return
        msg_id = "dl-" + hashlib.sha1(delivery.reply.encode()).hexdigest()
        await self._store(self._subscription.service, letter, msg_id)
        await self.settle(delivery, b"+ACK")

    # closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop pulling, release every unsettled delivery (``-NAK``: redelivered at once),
        flush; remove the consumers of an ephemeral service. Each step bounded."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        await stop_tasks([self._renewer])
        client = self._link.client
        released = list(self._unsettled)
        self._unsettled.clear()
        self._ready.clear()
        try:
            async with asyncio.timeout(CLOSE_STEP):
                for sub in self._subs:
                    await sub.unsubscribe()
                for reply in released:
                    await client.publish(reply, b"-NAK")
                if not client.is_closed:
                    await client.flush(timeout=2)
        except STEP_ERRORS as exc:
            log.warning(
                "nats: releasing %d deliveries of service %s on %s: %s; they are redelivered after the lease",
                len(released),
                self._subscription.service,
                self._link.server,
                describe_error(exc),
            )
        if self._subscription.ephemeral:
            await self._remove_consumers()

    async def _remove_consumers(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_STEP):
                for pull in self._pulls:
                    await self._link.js.delete_consumer(pull.stream, pull.name)
        except STEP_ERRORS as exc:
            log.info("nats: observer consumers left to expire (inactive_threshold): %s", describe_error(exc))
