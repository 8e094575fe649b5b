"""Pipelined publishing on one confirm-mode channel: a loop turn's messages in one write.

aiormq's ``basic_publish`` takes the channel lock, queues one write per message, waits
for the socket to drain and then for the confirm, so N concurrent publishes cost N
queued writes, N drains and N ``send`` calls, and a batch needs one task per message to
keep its confirms in flight together. `Publisher` numbers each message (the publisher
confirm sequence), registers its confirm future with the channel and buffers its frames;
one flusher task writes everything buffered so far as a single chunk, waits for that
chunk to drain, and repeats. Callers then wait on plain futures, which the channel
resolves from the broker's ``basic.ack``/``basic.nack`` and fails when it closes.

This relies on parts of aiormq's `Channel` that are not in its abstract interface
(``delivery_tag``, ``confirmations``, ``write_queue``, ``max_content_size``);
`Publisher.usable` checks them, and `Link` falls back to ``basic_publish`` without them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader

from pycomms import PublishError

from ._errors import describe

log = logging.getLogger("pycomms.amqp")

Confirm = asyncio.Future[Any]
"""Resolved with the broker's ``basic.ack``; fails with `aiormq.exceptions.DeliveryError`
on a ``basic.nack``, or with the channel's error when the channel closes first."""


@dataclass(slots=True)
class Outgoing:
    """One message to publish: where to, the bytes, and its AMQP properties."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Basic.Properties


METHOD_FRAME_CACHE = 1024
"""Destinations (exchange, routing key) whose ``basic.publish`` frame is kept encoded."""

_REQUIRED = ("delivery_tag", "confirmations", "write_queue", "max_content_size", "create_future", "number")


class Publisher:
    """Publishes on one confirm-mode aiormq channel that nothing else publishes on.

    `submit` is synchronous: the confirm sequence numbers are taken in call order and the
    frames are written in that same order, which is what keeps the channel's numbering
    and the broker's in step. Not thread-safe; one event loop.
    """

    def __init__(self, channel: aiormq.Channel) -> None:
        self._channel = channel
        self._chunks: list[bytes] = []
        self._methods: dict[tuple[str, str], bytes] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        channel.closing.add_done_callback(lambda _: self._stop())

    @staticmethod
    def usable(channel: object) -> TypeGuard[aiormq.Channel]:
        """Whether ``channel`` has the aiormq internals this class relies on."""
        return isinstance(channel, aiormq.Channel) and all(hasattr(channel, name) for name in _REQUIRED)

    @property
    def is_closed(self) -> bool:
        """The channel is closed, or a write failed: publish on a new channel."""
        return self._failed is not None or self._channel.is_closed

    def submit(self, messages: Sequence[Outgoing]) -> list[Confirm]:
        """Queue ``messages`` for the next write; one confirm future each, in order.

        Raises `aiormq.exceptions.ChannelInvalidStateError` when the channel is unusable,
        and `PublishError` for a message AMQP cannot carry (before queueing any).
        """
        if self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("the publisher channel is closed")
        encoded = [self._encode(message) for message in messages]
        channel = self._channel
        confirms: list[Confirm] = []
        for frames in encoded:
            channel.delivery_tag += 1
            confirm = channel.create_future()
            channel.confirmations[channel.delivery_tag] = confirm
            confirms.append(confirm)
            self._chunks.append(frames)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return confirms

    def _encode(self, message: Outgoing) -> bytes:
        """The frames of one ``basic.publish``: method, content header, body frames."""
        number, limit, body = self._channel.number, self._channel.max_content_size, message.body
        try:
            frames = [
                self._method_frame(message.exchange, message.routing_key),
                pamqp.frame.marshal(ContentHeader(0, len(body), message.properties), number),
            ]
            for start in range(0, len(body), limit):
                frames.append(pamqp.frame.marshal(ContentBody(body[start : start + limit]), number))
        except (ValueError, TypeError, PAMQPException) as exc:
            raise PublishError(f"amqp: cannot encode a message for {message.routing_key[:100]!r}: {exc}") from exc
        return b"".join(frames)

    def _method_frame(self, exchange: str, routing_key: str) -> bytes:
        """The ``basic.publish`` frame, the same for every message to one destination."""
        key = (exchange, routing_key)
        frame = self._methods.get(key)
        if frame is None:
            if len(self._methods) >= METHOD_FRAME_CACHE:
                self._methods.clear()
            method = Basic.Publish(exchange=exchange, routing_key=routing_key)
            frame = self._methods[key] = pamqp.frame.marshal(method, self._channel.number)
        return frame

    async def _flush(self) -> None:
        """Write what is buffered, one chunk at a time, waiting for each to drain."""
        channel = self._channel
        try:
            while self._chunks and not self.is_closed:
                payload = b"".join(self._chunks)
                self._chunks.clear()
                drained = channel.create_future()
                await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False, drain_future=drained))
                await drained
        except asyncio.CancelledError:
            self._fail(aiormq.exceptions.ChannelInvalidStateError("publishing was interrupted"))
            raise
        except Exception as exc:  # the channel or connection failed under the write
            log.debug("amqp: publisher write failed: %s", describe(exc))
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Give up on this channel: frames may be lost, so its numbering cannot be trusted.

        The confirms of messages never written would wait for ever: fail every one still
        pending on the channel (they are published again on a new channel)."""
        self._failed = exc
        self._chunks.clear()
        for confirm in list(self._channel.confirmations.values()):
            if isinstance(confirm, asyncio.Future) and not confirm.done():
                confirm.set_exception(aiormq.exceptions.ChannelInvalidStateError(f"publishing failed: {describe(exc)}"))

    def _stop(self) -> None:
        """The channel closed: its confirms are failed by aiormq; stop a waiting flusher."""
        self._chunks.clear()
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()

    async def close(self) -> None:
        """Stop the flusher (the channel itself is closed by its owner)."""
        self._stop()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
