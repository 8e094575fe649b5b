"""``asyncpg``: a hand-written PostgreSQL queue table.

Publishers: one ``INSERT`` per message from every concurrent task over a pool of
``POOL_SIZE`` connections (a batch: one ``INSERT ... SELECT unnest($1)``). Consumer:
one claimer that leases up to the free handler slots with ``FOR UPDATE SKIP LOCKED``
in a CTE (polling every ``POLL_INTERVAL`` when the table is empty), ``concurrency``
workers that validate and handle, and whose ``DELETE`` acks are coalesced into one
statement per round trip. The table is dropped when the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]

from bench._impl import BATCHES, EVENTS, Unsupported
from bench._messages import BenchEvent
from bench._tracker import Tracker
from bench.baselines._common import Coalescer, WorkerPool, cancel, driver_url, fresh_name, started

POOL_SIZE = 16
POLL_INTERVAL = 0.002
LEASE = "30 seconds"


class AsyncpgSession:
    def __init__(self, url: str, tracker: Tracker) -> None:
        self._url = url
        self._tracker = tracker
        self._table = fresh_name("bench_queue").replace("-", "_")
        self._pool: asyncpg.Pool | None = None
        self._claimer: asyncpg.Connection | None = None
        self._acker: asyncpg.Connection | None = None
        self._workers: WorkerPool[tuple[int, str]] | None = None
        self._acks: Coalescer[int] = Coalescer(self._flush_acks)
        self._loop: asyncio.Task[None] | None = None

    async def start(self, concurrency: int) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        await self._pool.execute(
            f"CREATE TABLE {self._table} (id bigserial PRIMARY KEY, body text NOT NULL, leased_until timestamptz)"
        )
        self._claimer = await asyncpg.connect(self._url)
        self._acker = await asyncpg.connect(self._url)
        self._workers = WorkerPool(concurrency, self._handle)
        self._loop = asyncio.create_task(self._claim())

    async def _claim(self) -> None:
        assert self._claimer is not None
        assert self._workers is not None
        claim = await self._claimer.prepare(
            f"WITH c AS (SELECT id FROM {self._table} WHERE leased_until IS NULL OR leased_until < now() "
            f"ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) "
            f"UPDATE {self._table} q SET leased_until = now() + interval '{LEASE}' FROM c WHERE q.id = c.id "
            f"RETURNING q.id, q.body"
        )
        workers = self._workers
        while True:
            room = await workers.wait_room()
            rows = await claim.fetch(room)
            if not rows:
                await asyncio.sleep(POLL_INTERVAL)
                continue
            for row in rows:
                workers.put((row[0], row[1]))

    async def _handle(self, item: tuple[int, str]) -> None:
        row_id, body = item
        event = BenchEvent.model_validate_json(body)
        self._tracker.hit(event.seq)
        await self._acks.submit((row_id,))

    async def _flush_acks(self, ids: list[int]) -> None:
        assert self._acker is not None
        await self._acker.execute(f"DELETE FROM {self._table} WHERE id = ANY($1::bigint[])", ids)

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        assert self._pool is not None
        if len(events) == 1:
            await self._pool.execute(f"INSERT INTO {self._table} (body) VALUES ($1)", events[0].model_dump_json())
        else:
            bodies = [event.model_dump_json() for event in events]
            await self._pool.execute(f"INSERT INTO {self._table} (body) SELECT unnest($1::text[])", bodies)

    async def request(self, seq: int) -> None:
        raise Unsupported("asyncpg baseline has no request/reply")

    async def close(self) -> None:
        await cancel(self._loop)
        if self._workers is not None:
            await self._workers.close()
        await self._acks.close()
        try:
            if self._pool is not None:
                await self._pool.execute(f"DROP TABLE IF EXISTS {self._table}")
        finally:
            for connection in (self._claimer, self._acker):
                if connection is not None:
                    await connection.close()
            if self._pool is not None:
                await self._pool.close()


class AsyncpgRaw:
    name = "asyncpg"
    description = f"hand-written asyncpg queue: INSERT per message (pool of {POOL_SIZE}), SKIP LOCKED claimer"
    workloads = frozenset({EVENTS, BATCHES})

    def __init__(self, url: str) -> None:
        self._url = driver_url(url, "postgresql")

    async def open(self, tracker: Tracker, concurrency: int) -> AsyncpgSession:
        return await started(AsyncpgSession(self._url, tracker), concurrency)


def make(url: str) -> AsyncpgRaw:
    return AsyncpgRaw(url)
