"""``nats-py``: a hand-written NATS JetStream queue with nats-py, and plain NATS requests.

Publishers: ``js.publish`` awaited per message (the stream's ack), concurrent tasks
sharing one connection; a batch is that many publishes in flight at once. Consumer: a
durable pull consumer (file storage, work-queue stream, explicit acks) fetched for as
many messages as there are free handler slots, ``concurrency`` workers that validate and
handle each message, then ``ack`` it. Request/reply: a plain NATS request (``nc.request``)
to a subscription that validates the ``Ping`` and responds with the ``Pong``. The stream
is deleted when the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from bench._impl import ALL_WORKLOADS
from bench._messages import BenchEvent, Ping, Pong
from bench._tracker import Tracker
from bench.baselines._common import WorkerPool, cancel, fresh_name, started, strip_query


class NatsSession:
    def __init__(self, url: str, tracker: Tracker) -> None:
        self._url = url
        self._tracker = tracker
        self._name = fresh_name().replace(".", "-")
        self._subject = f"{self._name}.events"
        self._nc: Any = None
        self._js: Any = None
        self._psub: Any = None
        self._pool: WorkerPool[Msg] | None = None
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, concurrency: int) -> None:
        self._nc = await nats.connect(self._url, connect_timeout=5)
        self._js = self._nc.jetstream(timeout=10.0)  # PyComms' operation_timeout
        await self._js.add_stream(
            StreamConfig(
                name=self._name,
                subjects=[self._subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        await self._js.add_consumer(
            self._name, ConsumerConfig(durable_name="bench", ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
        )
        self._psub = await self._js.pull_subscribe_bind("bench", self._name)
        await self._nc.subscribe(f"{self._name}.ping", cb=self._respond)
        self._pool = WorkerPool(concurrency, self._handle)
        self._loop = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._pool is not None
        pool = self._pool
        while not self._stopping:
            room = await pool.wait_room()
            try:
                msgs = await self._psub.fetch(room, timeout=1.0)
            except TimeoutError:  # nats-py raises its own and asyncio's when nothing came
                continue
            except NatsError:  # a 409 or a lost pull on a busy server: pull again, as a real consumer would
                continue
            for msg in msgs:
                pool.put(msg)

    async def _handle(self, msg: Msg) -> None:
        event = BenchEvent.model_validate_json(msg.data)
        self._tracker.hit(event.seq)
        await msg.ack()

    async def _respond(self, msg: Msg) -> None:
        ping = Ping.model_validate_json(msg.data)
        await msg.respond(Pong(seq=ping.seq).model_dump_json().encode())

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        if len(events) == 1:
            await self._js.publish(self._subject, events[0].model_dump_json().encode())
            return
        await asyncio.gather(*(self._js.publish(self._subject, e.model_dump_json().encode()) for e in events))

    async def request(self, seq: int) -> None:
        reply = await self._nc.request(f"{self._name}.ping", Ping(seq=seq).model_dump_json().encode(), timeout=10)
        pong = Pong.model_validate_json(reply.data)
        if pong.seq != seq:
            raise AssertionError(f"request {seq} got the reply to {pong.seq}")

    async def close(self) -> None:
        # The read loop ends by itself within a fetch's 1 s: cancelling nats-py's fetch can
        # be swallowed by its asyncio.wait_for on Python 3.11 (see pycomms.spi.stop_tasks).
        self._stopping = True
        if self._loop is not None:
            await asyncio.wait([self._loop], timeout=3.0)
            await cancel(self._loop)  # at once if it ended (its outcome is taken), else cancelled
        if self._pool is not None:
            await self._pool.close()
        if self._nc is not None:
            try:
                await self._js.delete_stream(self._name)
            finally:
                await self._nc.close()


class NatsRaw:
    name = "nats-py"
    description = "hand-written nats-py JetStream: awaited js.publish, durable pull consumer, explicit acks"
    workloads = ALL_WORKLOADS

    def __init__(self, url: str) -> None:
        self._url = strip_query(url)

    async def open(self, tracker: Tracker, concurrency: int) -> NatsSession:
        return await started(NatsSession(self._url, tracker), concurrency)


def make(url: str) -> NatsRaw:
    return NatsRaw(url)
