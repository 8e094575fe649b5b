"""A service's dead letters: a durable classic queue that is listed without consuming it.

AMQP has no "peek". Listing takes the letters with ``basic.get`` (unacknowledged) on a
private channel and then closes that channel, which hands them all back to the broker
in their original positions. Replay and purge take every letter the same way and
acknowledge only the chosen ones (after republishing them, for replay). While one of
these calls runs, the letters it holds are invisible to a concurrent call.

Each call has ``operation_timeout``, through a reconnection (a call cut by a lost
connection starts again on the next one; a replay may then send a letter twice:
at-least-once). One that passes it raises `OperationError` at once and leaves the
closing of its channel (which gives the letters back) to the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from pycomms import OperationError
from pycomms.spi import DeadLetter

from ._connection import close_quietly, open_channel
from ._errors import map_amqp_errors, timed_out
from ._link import Link
from ._names import ATTEMPT_HEADER, QUEUE_HEADER
from ._publisher import Outgoing
from ._topology import PERSISTENT, Topology

log = logging.getLogger("pycomms.amqp")

Taken = tuple[DeliveredMessage, DeadLetter]
T = TypeVar("T")


class DeadLetterStore:
    """List, replay and purge the dead-letter queues of a namespace."""

    def __init__(self, link: Link, topology: Topology, timeout: float) -> None:
        self._link = link
        self._topology = topology
        self._timeout = timeout

    async def _operation(self, doing: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` within ``operation_timeout``, again when the connection was lost
        under it (after the reconnection); raise `OperationError` naming ``doing``."""
        link = self._link
        what = f"amqp: {doing} on {link.where}"
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    generation = link.generation
                    try:
                        with map_amqp_errors(OperationError, what):
                            return await attempt()
                    except OperationError:
                        if link.connected and link.generation == generation:
                            raise
                        log.debug("amqp: %s: the connection was lost; trying again once restored", doing)
                        await link.connection()
        except TimeoutError:
            state = "connected, but the broker did not answer" if link.connected else link.reconnect_state()
            raise timed_out(OperationError, what, self._timeout, "operation_timeout", state) from None

    @asynccontextmanager
    async def _taken(
        self, service: str, limit: int | None, wanted: set[str] | None = None
    ) -> AsyncIterator[tuple[RawChannel, list[Taken]]]:
        """Take up to ``limit`` letters (all if ``None``; with ``wanted``, only until all
        of those ids were seen) unacknowledged on a private channel; closing it at the
        end returns whatever was not acknowledged."""
        conn = await self._link.connection()
        channel = await open_channel(conn)
        try:
            queue = await self._topology.declare_dead_letter_queue(channel, service)
            raw = await channel.get_underlay_channel()
            taken: list[Taken] = []
            missing = set(wanted) if wanted is not None else None
            while (limit is None or len(taken) < limit) and (missing is None or missing):
                message = await raw.basic_get(queue, no_ack=False)
                if not isinstance(message.delivery, Basic.GetOk):
                    break
                try:
                    letter = DeadLetter.from_json(message.body)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("amqp: skipping an unreadable dead letter in %s: %s", queue, exc)
                    continue
                taken.append((message, letter))
                if missing is not None:
                    missing.discard(letter.id)
            yield raw, taken
        finally:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                self._link.spawn(close_quietly(channel))  # the caller gave up: do not make it wait
            else:
                await close_quietly(channel)

    async def list(self, service: str, limit: int) -> list[DeadLetter]:
        async def attempt() -> list[DeadLetter]:
            async with self._taken(service, limit) as (_, taken):
                return [letter for _, letter in taken]

        return await self._operation(f"listing dead letters of {service!r}", attempt)

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else set(ids)

        async def attempt() -> int:
            async with self._taken(service, None, wanted) as (raw, taken):
                chosen = [(m, letter) for m, letter in taken if wanted is None or letter.id in wanted]
                outgoing = []
                for message, letter in chosen:
                    headers = message.header.properties.headers or {}
                    queue = str(headers.get(QUEUE_HEADER) or self._topology.names.service_queue(service))
                    properties = Basic.Properties(
                        content_type="application/json",
                        delivery_mode=PERSISTENT,
                        message_id=letter.id,
                        headers={ATTEMPT_HEADER: 1},
                    )
                    outgoing.append(Outgoing("", queue, letter.envelope, properties))
                await self._link.publish(outgoing)  # all confirmed before any letter is removed: at-least-once
                for message, _ in chosen:
                    await raw.basic_ack(message.delivery_tag or 0)
            return len(chosen)

        return await self._operation(f"replaying dead letters of {service!r}", attempt)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else set(ids)

        async def attempt() -> int:
            count = 0
            async with self._taken(service, None, wanted) as (raw, taken):
                for message, letter in taken:
                    if wanted is None or letter.id in wanted:
                        await raw.basic_ack(message.delivery_tag or 0)
                        count += 1
            return count

        return await self._operation(f"purging dead letters of {service!r}", attempt)
