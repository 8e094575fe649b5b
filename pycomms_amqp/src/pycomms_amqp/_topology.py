"""What goes where on the broker: declarations and the messages that route envelopes.

Events go to the namespace's topic exchange with the type name as routing key; each
service's durable queue is bound to it with the event types it handles. Commands and
requests go through the default exchange straight to the durable queue of their type,
which the sender declares first (once per connection) so that a command sent before
its service ever started is kept. Replies go through a direct exchange to the requesting node's exclusive queue.
Retries go through a headers exchange into a TTL queue per delay bucket, whose expired
messages are dead-lettered to the default exchange, i.e. back to the queue named by
their routing key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractQueue
from aio_pika.exceptions import ChannelPreconditionFailed
from pamqp.commands import Basic

from pycomms import PublishError
from pycomms.spi import STRUCTURED_CONTENT_TYPE, DeadLetter, Envelope, stop_tasks

from ._errors import DRIVER_ERRORS, describe
from ._link import Link
from ._names import (
    ATTEMPT_HEADER,
    DELAY_HEADER,
    DELAY_REDECLARE_S,
    QUEUE_HEADER,
    Names,
    delay_bucket_ms,
    delay_queue_arguments,
    work_queue_arguments,
)
from ._options import AmqpOptions
from ._publisher import Outgoing
from ._registry import Registry

log = logging.getLogger("pycomms.amqp")

PERSISTENT = 2
TRANSIENT = 1


OBSERVER_QUEUE_EXPIRES_MS = 60_000
"""An ephemeral service's queue that nobody consumes is deleted after this long."""


class Topology:
    """Declares the namespace's exchanges and queues and builds outgoing messages."""

    def __init__(self, names: Names, options: AmqpOptions, link: Link) -> None:
        self.names = names
        self.registry = Registry(names)
        self._options = options
        self._link = link
        self._work_arguments = work_queue_arguments(options.queue_type)
        self._command_queues: dict[str, int] = {}  # queue -> link generation it was declared in
        self._delay_queues: dict[int, tuple[int, float]] = {}  # bucket -> (generation, monotonic time)
        self._declaring: dict[str, asyncio.Future[None]] = {}

    # declarations --------------------------------------------------------------------

    async def declare_exchanges(self, channel: AbstractChannel) -> int:
        """The namespace's exchanges and registry (idempotent; done at every connection);
        returns how many records the registry holds."""
        names = self.names
        records = await self.registry.declare(channel)
        await channel.declare_exchange(names.events, ExchangeType.TOPIC, durable=True)
        await channel.declare_exchange(names.delay, ExchangeType.HEADERS, durable=True)
        await channel.declare_exchange(names.presence, ExchangeType.FANOUT, durable=False)
        await channel.declare_exchange(names.replies, ExchangeType.DIRECT, durable=True)
        return records

    async def declare_work_queue(self, channel: AbstractChannel, queue: str) -> AbstractQueue:
        """A durable service or command queue, with the arguments every node agrees on."""
        await self.registry.record(channel, queue)
        return await channel.declare_queue(queue, durable=True, arguments=self._work_arguments)

    async def declare_observer_queue(self, channel: AbstractChannel, queue: str) -> AbstractQueue:
        """The event queue of an ephemeral service: auto-delete, so the broker deletes it
        when its last consumer goes (the service stopped, or its node died); shared by
        the instances of that service like any service queue. Classic: quorum queues
        cannot auto-delete. ``x-expires`` removes one that never got a consumer."""
        arguments: dict[str, Any] = {"x-queue-type": "classic", "x-expires": OBSERVER_QUEUE_EXPIRES_MS}
        await self.registry.record(channel, queue)
        return await channel.declare_queue(queue, durable=False, auto_delete=True, arguments=arguments)

    async def declare_dead_letter_queue(self, channel: AbstractChannel, service: str) -> str:
        """A service's dead-letter store: always a classic durable queue (listing it
        relies on unacknowledged messages going back to their original position)."""
        queue = self.names.dead_letter_queue(service)
        await self.registry.record(channel, queue)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"})
        return queue

    async def _ensure_command_queue(self, queue: str) -> None:
        if self._command_queues.get(queue) == self._link.generation:
            return
        await self._once(queue, lambda: self._declare_command_queue(queue))

    async def _declare_command_queue(self, queue: str) -> None:
        async def declare(channel: AbstractChannel) -> None:
            await self.declare_work_queue(channel, queue)

        generation = await self._declare(f"queue {queue!r}", declare)
        self._command_queues[queue] = generation

    async def _ensure_delay_queue(self, bucket: int) -> None:
        declared = self._delay_queues.get(bucket)
        now = time.monotonic()
        if declared and declared[0] == self._link.generation and now - declared[1] < DELAY_REDECLARE_S:
            return
        await self._once(f"delay:{bucket}", lambda: self._declare_delay_queue(bucket))

    async def _declare_delay_queue(self, bucket: int) -> None:
        now = time.monotonic()
        queue = self.names.delay_queue(bucket)

        async def declare(channel: AbstractChannel) -> None:
            await self.registry.record(channel, queue)
            declared = await channel.declare_queue(queue, durable=True, arguments=delay_queue_arguments(bucket))
            await declared.bind(self.names.delay, arguments={"x-match": "all", DELAY_HEADER: str(bucket)})

        generation = await self._declare(f"delay queue {queue!r}", declare)
        self._delay_queues[bucket] = (generation, now)

    async def _declare(self, what: str, declare: Callable[[AbstractChannel], Awaitable[None]]) -> int:
        """Run ``declare`` on the admin channel until it succeeds on a live connection
        (the caller bounds the time); return the link generation it succeeded in. A
        refused declaration (different arguments) raises `PublishError` at once."""
        while True:
            generation = self._link.generation
            try:
                await declare(await self._link.admin())
                return generation
            except ChannelPreconditionFailed as exc:
                raise PublishError(
                    f"amqp: declaring {what} was refused ({describe(exc)}); do all nodes of the namespace "
                    "use the same queue_type?"
                ) from exc
            except DRIVER_ERRORS as exc:
                log.debug("amqp: declaring %s failed (%s); trying again", what, describe(exc))
                await asyncio.sleep(0.05)

    async def _once(self, key: str, declare: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``declare()`` unless the same declaration is running; then share its outcome."""
        future = self._declaring.get(key)
        if future is None:
            future = asyncio.ensure_future(declare())
            self._declaring[key] = future
            future.add_done_callback(lambda done: self._forget(key, done))
        await asyncio.shield(future)

    async def close(self) -> None:
        """Stop the declarations still running (their callers gave up on them)."""
        await stop_tasks([f for f in self._declaring.values() if isinstance(f, asyncio.Task)], give_up_after=1.0)

    def _forget(self, key: str, future: asyncio.Future[None]) -> None:
        if self._declaring.get(key) is future:
            del self._declaring[key]
        if not future.cancelled():
            future.exception()  # retrieved here too, in case every waiter was cancelled

    # outgoing messages ----------------------------------------------------------------

    async def envelope_messages(self, envelopes: Iterable[Envelope]) -> list[Outgoing]:
        """The AMQP messages that route ``envelopes`` by kind (declaring command queues)."""
        names = self.names
        out: list[Outgoing] = []
        for env in envelopes:
            kind = env.kind
            if kind == "event":
                out.append(Outgoing(names.events, env.type, env.encode(), _properties(env, PERSISTENT)))
            elif kind in ("command", "request"):
                queue = names.command_queue(env.type)
                await self._ensure_command_queue(queue)
                out.append(Outgoing("", queue, env.encode(), _properties(env, PERSISTENT)))
            elif kind == "reply":
                out.append(Outgoing(names.replies, env.reply_to or "-", env.encode(), _properties(env, TRANSIENT)))
            else:
                raise PublishError(f"amqp: unknown envelope kind {kind!r}")
        return out

    async def retry_message(
        self, data: bytes, message_id: str | None, queue: str, attempt: int, delay: float
    ) -> Outgoing:
        """``data`` back into ``queue`` as ``attempt``, now or through a delay bucket."""
        headers: dict[str, Any] = {ATTEMPT_HEADER: attempt}
        if delay <= 0:
            return Outgoing("", queue, data, _raw_properties(message_id, headers))
        bucket = delay_bucket_ms(delay)
        await self._ensure_delay_queue(bucket)
        headers[DELAY_HEADER] = str(bucket)
        return Outgoing(self.names.delay, queue, data, _raw_properties(message_id, headers))

    def dead_letter_message(self, letter: DeadLetter, queue: str) -> Outgoing:
        """``letter`` into its service's dead-letter queue, remembering the source queue."""
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_id=letter.id,
            message_type=letter.type,
            headers={QUEUE_HEADER: queue},
        )
        return Outgoing("", self.names.dead_letter_queue(letter.service), letter.to_json(), properties)


def _properties(env: Envelope, delivery_mode: int) -> Basic.Properties:
    return Basic.Properties(
        content_type=STRUCTURED_CONTENT_TYPE,
        delivery_mode=delivery_mode,
        message_id=env.id,
        correlation_id=env.correlation_id,
        message_type=env.type,
    )


def _raw_properties(message_id: str | None, headers: dict[str, Any]) -> Basic.Properties:
    return Basic.Properties(
        content_type=STRUCTURED_CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=message_id,
        headers=headers,
    )
