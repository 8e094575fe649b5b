"""Acknowledgements of one consumer channel, coalesced into ``multiple`` acks.

Handlers finish in any order, but mostly close to delivery order. Instead of one
``basic.ack`` per message (one frame, one write and one ``send`` each, and as much
work for the broker), `Settler` collects the acks requested during a loop turn and
sends one ``basic.ack(multiple=True)`` for the longest run of delivery tags, from the
oldest unsettled one, that are all acknowledged; acks beyond a gap go out one by one.

A ``multiple`` ack settles every unsettled tag up to its own on the broker, so it must
never cover a tag still in a handler, and its own tag must still be unsettled there
(else the broker closes the channel with ``unknown delivery tag``, requeueing every
message of the channel). Both hold because tags are decided here in delivery order
and all frames go out from one task, in the order they were decided.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging

from aiormq.abc import AbstractChannel as RawChannel

from ._errors import DRIVER_ERRORS, describe

log = logging.getLogger("pycomms.amqp")

COMPACT_AFTER = 1024
"""Tags settled out of order that are remembered before `Settler._compact` drops them."""


class Settler:
    """Sends the acks and nacks of one channel's deliveries. One event loop."""

    def __init__(self, channel: RawChannel) -> None:
        self._channel = channel
        self._unsettled: collections.deque[int] = collections.deque()  # delivery order
        self._settled_early: set[int] = set()  # already sent, still in _unsettled
        self._acks: set[int] = set()
        self._nacks: list[int] = []
        self._sender: asyncio.Task[None] | None = None

    def delivered(self, tag: int) -> None:
        """Record a delivery; every recorded tag must be settled here eventually.

        Deliveries are recorded in tag order (aiormq starts their callbacks in frame
        order); a tag that comes late anyway is put in its place, so that a ``multiple``
        ack can never skip over it."""
        unsettled = self._unsettled
        if unsettled and tag < unsettled[-1]:
            bisect.insort(unsettled, tag)
        else:
            unsettled.append(tag)

    def ack(self, tag: int) -> None:
        """Acknowledge ``tag`` (sent within the next loop turns)."""
        self._acks.add(tag)
        self._wake()

    def release(self, tag: int) -> None:
        """Give ``tag`` back to the broker for redelivery (``basic.nack``, requeue)."""
        self._nacks.append(tag)
        self._wake()

    def _wake(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())

    def _decide(self) -> tuple[list[int], int | None, list[int]]:
        """Take what was requested: (tags to nack, tag of a ``multiple`` ack, single acks)."""
        nacks, self._nacks = self._nacks, []
        acks, self._acks = self._acks, set()
        early, unsettled = self._settled_early, self._unsettled
        early.update(nacks)
        up_to: int | None = None
        while unsettled:
            tag = unsettled[0]
            if tag in acks:
                acks.discard(tag)
                up_to = tag
            elif tag in early:
                early.discard(tag)
            else:
                break
            unsettled.popleft()
        singles = sorted(acks)
        early.update(singles)
        if len(early) > COMPACT_AFTER:
            self._compact()
        return nacks, up_to, singles

    def _compact(self) -> None:
        """Forget the tags settled out of order (a long handler holds the oldest tag
        while thousands of later ones settle): only unsettled tags matter to the walk."""
        early = self._settled_early
        self._unsettled = collections.deque(tag for tag in self._unsettled if tag not in early)
        early.clear()

    async def _send(self) -> None:
        """Send every decision in order; one task at a time, so frames keep that order."""
        await asyncio.sleep(0)  # let the acks of this loop turn gather
        channel = self._channel
        try:
            while self._acks or self._nacks:
                nacks, up_to, singles = self._decide()
                for tag in nacks:
                    await channel.basic_nack(tag, requeue=True, wait=False)
                if up_to is not None:
                    await channel.basic_ack(up_to, multiple=True, wait=False)
                for tag in singles:
                    await channel.basic_ack(tag, wait=False)
        except DRIVER_ERRORS as exc:
            # The channel is gone; the broker requeues whatever it had not been told.
            log.debug("amqp: acks not sent (%s); those messages will be redelivered", describe(exc))
            self._acks.clear()
            self._nacks.clear()

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every requested ack and nack is
        handed to the connection's writer, ahead of anything queued after this call
        (such as the ``channel.close`` of a receiver that stops)."""
        if self._sender is None or self._sender.done():
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._sender)
        except TimeoutError:
            log.debug("amqp: acks still not sent after %ss; those messages will be redelivered", timeout)

    async def close(self) -> None:
        """Stop sending (the channel is closed or closing: nothing more can be settled)."""
        self._acks.clear()
        self._nacks.clear()
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
