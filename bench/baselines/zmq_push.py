"""``pyzmq``: ZeroMQ PUSH/PULL over loopback TCP, no acks (an upper bound, not a peer).

Every publisher task awaits ``send`` on one PUSH socket (a batch: its messages sent
in a row); the consumer reads the PULL socket only while it has free handler slots
and validates and handles each message. Nothing confirms delivery, so this is what a
transport costs when it promises nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import zmq
import zmq.asyncio

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import WorkerPool, cancel


class ZmqSession:
    def __init__(self, tracker: Tracker, concurrency: int) -> None:
        self._context = zmq.asyncio.Context()
        self._pull = self._context.socket(zmq.PULL)
        self._push = self._context.socket(zmq.PUSH)
        self._tracker = tracker
        self._concurrency = concurrency
        self._pool: WorkerPool[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        port = self._pull.bind_to_random_port("tcp://127.0.0.1")
        self._push.connect(f"tcp://127.0.0.1:{port}")
        self._pool = WorkerPool(self._concurrency, self._handle)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._pool is not None
        pool = self._pool
        while True:
            await pool.wait_room()
            pool.put(await self._pull.recv())

    async def _handle(self, body: bytes) -> None:
        self._tracker.hit(BenchEvent.model_validate_json(body).seq)

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        for event in events:
            await self._push.send(event.model_dump_json().encode())

    async def request(self, seq: int) -> None:
        raise Unsupported("pyzmq baseline has no request/reply")

    async def close(self) -> None:
        await cancel(self._task)
        if self._pool is not None:
            await self._pool.close()
        self._push.close(linger=0)
        self._pull.close(linger=0)
        self._context.term()


class ZmqPush:
    name = "pyzmq"
    description = "pyzmq PUSH/PULL over loopback TCP, no acks"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self, tracker: Tracker, concurrency: int) -> ZmqSession:
        session = ZmqSession(tracker, concurrency)
        session.start()
        return session


def make(url: str) -> ZmqPush:
    return ZmqPush(url)
