"""``redis-py``: a hand-written Redis Streams queue with redis-py's asyncio client.

Publishers: the ``XADD`` commands of all concurrent tasks are pipelined over one
connection (while one pipeline is in flight the next gathers); a batch goes in the
same pipeline. Consumer: one ``XREADGROUP`` loop asking for as many entries as there
are free handler slots, ``concurrency`` workers that validate and handle each entry,
and whose ``XACK`` ids are coalesced into one ``XACK`` per round trip. The stream
is deleted when the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import Coalescer, WorkerPool, cancel, fresh_name, started, strip_query

GROUP = "bench"
FIELD = b"body"


class RedisSession:
    def __init__(self, url: str, stream: str, tracker: Tracker) -> None:
        self._writer = _client(url)
        self._acker = _client(url)
        self._reader = _client(url)
        self._stream = stream
        self._tracker = tracker
        self._xadd: Coalescer[str] = Coalescer(self._flush_xadd)
        self._xack: Coalescer[bytes] = Coalescer(self._flush_xack)
        self._pool: WorkerPool[tuple[bytes, bytes]] | None = None
        self._loop: asyncio.Task[None] | None = None

    async def start(self, concurrency: int) -> None:
        await self._writer.xgroup_create(self._stream, GROUP, id="$", mkstream=True)
        self._pool = WorkerPool(concurrency, self._handle)
        self._loop = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._pool is not None
        pool = self._pool
        streams: dict[Any, Any] = {self._stream: ">"}
        while True:
            room = await pool.wait_room()
            reply: Any = await self._reader.xreadgroup(GROUP, "c1", streams, count=room, block=1000)
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    pool.put((entry_id, fields[FIELD]))

    async def _handle(self, item: tuple[bytes, bytes]) -> None:
        entry_id, body = item
        event = BenchEvent.model_validate_json(body)
        self._tracker.hit(event.seq)
        await self._xack.submit((entry_id,))

    async def _flush_xadd(self, bodies: list[str]) -> None:
        async with self._writer.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.xadd(self._stream, {FIELD: body})
            await pipe.execute()

    async def _flush_xack(self, ids: list[bytes]) -> None:
        await self._acker.xack(self._stream, GROUP, *ids)

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        await self._xadd.submit([event.model_dump_json() for event in events])

    async def request(self, seq: int) -> None:
        raise Unsupported("redis-py baseline has no request/reply")

    async def close(self) -> None:
        await cancel(self._loop)
        if self._pool is not None:
            await self._pool.close()
        await self._xadd.close()
        await self._xack.close()
        try:
            await self._writer.delete(self._stream)
        finally:
            for client in (self._reader, self._acker, self._writer):
                await client.aclose()


class RedisRaw:
    name = "redis-py"
    description = "hand-written redis-py Streams client: pipelined XADD, XREADGROUP + coalesced XACK"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self._url = strip_query(url)

    async def open(self, tracker: Tracker, concurrency: int) -> RedisSession:
        return await started(RedisSession(self._url, f"{fresh_name()}:events", tracker), concurrency)


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=30, health_check_interval=30)


def make(url: str) -> RedisRaw:
    return RedisRaw(url)
