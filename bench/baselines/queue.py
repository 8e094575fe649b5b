"""``queue``: a bare ``asyncio.Queue`` hand-off, the floor under ``memory://``.

Per message it does what any typed in-process bus must: pydantic encode
(``model_dump_json``) on the way in, validate (``model_validate_json``) on the way
out, and a handler call from a pool of ``concurrency`` worker tasks. No envelope, no
routing, no acks: the difference to PyComms over ``memory://`` is the core's overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from bench._impl import ALL_WORKLOADS
from bench._messages import BenchEvent, Ping, Pong
from bench._tracker import Tracker


class QueueSession:
    def __init__(self, tracker: Tracker, concurrency: int) -> None:
        self._tracker = tracker
        self._events: asyncio.Queue[str] = asyncio.Queue()
        self._requests: asyncio.Queue[tuple[str, asyncio.Future[str]]] = asyncio.Queue()
        self._workers = [asyncio.create_task(self._consume()) for _ in range(concurrency)]
        self._workers += [asyncio.create_task(self._serve()) for _ in range(concurrency)]

    async def _consume(self) -> None:
        queue, tracker = self._events, self._tracker
        while True:
            data = await queue.get()
            event = BenchEvent.model_validate_json(data)
            tracker.hit(event.seq)

    async def _serve(self) -> None:
        while True:
            data, reply = await self._requests.get()
            ping = Ping.model_validate_json(data)
            if not reply.done():
                reply.set_result(Pong(seq=ping.seq).model_dump_json())

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        for event in events:
            await self._events.put(event.model_dump_json())

    async def request(self, seq: int) -> None:
        reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self._requests.put((Ping(seq=seq).model_dump_json(), reply))
        pong = Pong.model_validate_json(await reply)
        if pong.seq != seq:
            raise AssertionError(f"request {seq} got the reply to {pong.seq}")

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker


class QueueBaseline:
    name = "queue"
    description = "bare asyncio.Queue hand-off with pydantic encode + validate"
    workloads = ALL_WORKLOADS

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self, tracker: Tracker, concurrency: int) -> QueueSession:
        return QueueSession(tracker, concurrency)


def make(url: str) -> QueueBaseline:
    return QueueBaseline(url)
