"""``faststream-nats``: FastStream's NATS JetStream subscriber, used as documented.

A ``NatsBroker`` with one ``@broker.subscriber(subject, stream=JStream(...),
durable=..., pull_sub=PullSub(batch_size=concurrency), max_workers=concurrency)``
handler typed with the same pydantic model (FastStream validates it); every publisher
task awaits ``broker.publish(event, subject, stream=...)`` (the stream's ack). A batch
is that many publishes in flight at once (FastStream has no batch publish for NATS).
The stream (file storage, work-queue retention) is deleted when the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
from faststream.nats import JStream, NatsBroker, PullSub
from nats.js.api import RetentionPolicy, StorageType

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import fresh_name, strip_query

PUBLISH_TIMEOUT = 10.0
"""Seconds to wait for a stream ack (FastStream's default, 0.5 s, fails batches on a busy machine;
10 s is PyComms' operation_timeout and the nats-py baseline's)."""


class FastStreamNatsSession:
    def __init__(self, broker: NatsBroker, stream: str, subject: str, url: str) -> None:
        self._broker = broker
        self._stream = stream
        self._subject = subject
        self._url = url

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        if len(events) == 1:
            await self._broker.publish(events[0], self._subject, stream=self._stream, timeout=PUBLISH_TIMEOUT)
            return
        await asyncio.gather(
            *(self._broker.publish(e, self._subject, stream=self._stream, timeout=PUBLISH_TIMEOUT) for e in events)
        )

    async def request(self, seq: int) -> None:
        raise Unsupported("faststream-nats baseline has no request/reply")

    async def close(self) -> None:
        await self._broker.stop()
        nc = await nats.connect(self._url, connect_timeout=5)
        try:
            await nc.jetstream().delete_stream(self._stream)
        finally:
            await nc.close()


class FastStreamNats:
    name = "faststream-nats"
    description = "FastStream NatsBroker, JetStream durable pull subscriber (PullSub, max_workers)"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self._url = strip_query(url)

    async def open(self, tracker: Tracker, concurrency: int) -> FastStreamNatsSession:
        name = fresh_name()
        subject = f"{name}.events"
        stream = JStream(name, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE)
        broker = NatsBroker(self._url, logger=None, graceful_timeout=5.0)  # logger None: no logging

        @broker.subscriber(
            subject,
            stream=stream,
            durable="bench",
            pull_sub=PullSub(batch_size=concurrency, timeout=1.0),
            max_workers=concurrency,
        )
        async def on_event(event: BenchEvent) -> None:
            tracker.hit(event.seq)

        try:
            await broker.start()
        except BaseException:
            await broker.stop()
            raise
        return FastStreamNatsSession(broker, name, subject, self._url)


def make(url: str) -> FastStreamNats:
    return FastStreamNats(url)
