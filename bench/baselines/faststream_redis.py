"""``faststream-redis``: FastStream's Redis Streams subscriber, used as documented.

A ``RedisBroker`` with one ``@broker.subscriber(stream=StreamSub(..., group=...),
max_workers=concurrency)`` handler typed with the same pydantic model (FastStream
validates it), and ``broker.publish(event, stream=...)`` from every publisher task.
A batch is published through one redis-py pipeline (``publish(..., pipeline=pipe)``),
FastStream's documented way to send many messages in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from faststream.redis import RedisBroker, StreamSub

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import fresh_name, strip_query


class FastStreamRedisSession:
    def __init__(self, broker: RedisBroker, stream: str, url: str) -> None:
        self._broker = broker
        self._stream = stream
        self._url = url

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        if len(events) == 1:
            await self._broker.publish(events[0], stream=self._stream)
            return
        client = await self._broker.connect()
        async with client.pipeline(transaction=False) as pipe:
            for event in events:
                await self._broker.publish(event, stream=self._stream, pipeline=pipe)
            await pipe.execute()

    async def request(self, seq: int) -> None:
        raise Unsupported("faststream-redis baseline has no request/reply")

    async def close(self) -> None:
        await self._broker.stop()
        client = aioredis.Redis.from_url(self._url)
        try:
            await client.delete(self._stream)
        finally:
            await client.aclose()


class FastStreamRedis:
    name = "faststream-redis"
    description = "FastStream RedisBroker, Redis Streams subscriber (consumer group, max_workers)"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self._url = strip_query(url)

    async def open(self, tracker: Tracker, concurrency: int) -> FastStreamRedisSession:
        stream = f"{fresh_name()}:events"
        broker = RedisBroker(self._url, logger=None, graceful_timeout=5.0)  # type: ignore[arg-type]  # None: no logging

        @broker.subscriber(stream=StreamSub(stream, group="bench", consumer="c1"), max_workers=concurrency)
        async def on_event(event: BenchEvent) -> None:
            tracker.hit(event.seq)

        try:
            await broker.start()
        except BaseException:
            await broker.stop()
            raise
        return FastStreamRedisSession(broker, stream, self._url)


def make(url: str) -> FastStreamRedis:
    return FastStreamRedis(url)
