"""``aio-pika``: a hand-written RabbitMQ queue with the same durability as PyComms.

A durable queue; persistent messages published to it through the default exchange on
a channel with publisher confirms, every publisher task awaiting its own confirm (a
batch: its publishes in flight together, then all confirms awaited). Consumer: a
channel with ``prefetch_count=concurrency`` and a callback that validates, handles
and acks each message. The queue is deleted when the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import fresh_name, started, strip_query


class AioPikaSession:
    def __init__(self, url: str, tracker: Tracker) -> None:
        self._url = url
        self._tracker = tracker
        self._queue_name = fresh_name()
        self._producer: aio_pika.abc.AbstractConnection | None = None
        self._consumer: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None

    async def start(self, concurrency: int) -> None:
        self._consumer = await aio_pika.connect(self._url)
        channel = await self._consumer.channel()
        await channel.set_qos(prefetch_count=concurrency)
        self._queue = await channel.declare_queue(self._queue_name, durable=True)
        await self._queue.consume(self._on_message)
        self._producer = await aio_pika.connect(self._url)
        publish_channel = await self._producer.channel(publisher_confirms=True)
        self._exchange = publish_channel.default_exchange

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        event = BenchEvent.model_validate_json(message.body)
        self._tracker.hit(event.seq)
        await message.ack()

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        await asyncio.gather(*(self._publish_one(event) for event in events))

    async def _publish_one(self, event: BenchEvent) -> None:
        assert self._exchange is not None
        body = aio_pika.Message(
            event.model_dump_json().encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
        )
        await self._exchange.publish(body, routing_key=self._queue_name)

    async def request(self, seq: int) -> None:
        raise Unsupported("aio-pika baseline has no request/reply")

    async def close(self) -> None:
        try:
            if self._queue is not None:
                await self._queue.delete(if_unused=False, if_empty=False)
        finally:
            for connection in (self._producer, self._consumer):
                if connection is not None:
                    await connection.close()


class AioPikaRaw:
    name = "aio-pika"
    description = "hand-written aio-pika client: durable queue, persistent messages, publisher confirms"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self._url = strip_query(url)

    async def open(self, tracker: Tracker, concurrency: int) -> AioPikaSession:
        return await started(AioPikaSession(self._url, tracker), concurrency)


def make(url: str) -> AioPikaRaw:
    return AioPikaRaw(url)
