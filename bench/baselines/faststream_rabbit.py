"""``faststream-rabbit``: FastStream's RabbitMQ subscriber, used as documented.

A ``RabbitBroker`` (publisher confirms are its default) with one
``@broker.subscriber(RabbitQueue(name, durable=True), channel=Channel(prefetch_count=
concurrency))`` handler typed with the same pydantic model, and
``broker.publish(event, queue, persist=True)`` from every publisher task. FastStream
has no batch publish for RabbitMQ, so a batch is its publishes in flight together.
The queue is durable but auto-deleted when the run's consumer stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import fresh_name, strip_query


class FastStreamRabbitSession:
    def __init__(self, broker: RabbitBroker, queue: RabbitQueue) -> None:
        self._broker = broker
        self._queue = queue

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        await asyncio.gather(*(self._broker.publish(e, self._queue, persist=True) for e in events))

    async def request(self, seq: int) -> None:
        raise Unsupported("faststream-rabbit baseline has no request/reply")

    async def close(self) -> None:
        await self._broker.stop()


class FastStreamRabbit:
    name = "faststream-rabbit"
    description = "FastStream RabbitBroker subscriber (durable queue, prefetch=concurrency), persist=True"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self._url = strip_query(url)

    async def open(self, tracker: Tracker, concurrency: int) -> FastStreamRabbitSession:
        queue = RabbitQueue(fresh_name(), durable=True, auto_delete=True)
        broker = RabbitBroker(self._url, logger=None, graceful_timeout=5.0)

        @broker.subscriber(queue, channel=Channel(prefetch_count=concurrency))
        async def on_event(event: BenchEvent) -> None:
            tracker.hit(event.seq)

        try:
            await broker.start()
        except BaseException:
            await broker.stop()
            raise
        return FastStreamRabbitSession(broker, queue)


def make(url: str) -> FastStreamRabbit:
    return FastStreamRabbit(url)
