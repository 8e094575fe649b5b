"""``asyncio-tcp-lean``: the least a hand-written TCP hand-off with per-message acks does.

One connection; frames are ``[u32 length][JSON body]``. The server's reader validates
and handles each frame inline (no worker pool: concurrency is 1, the reader's) and
answers one byte per event (``0``), or ``1`` + a length-prefixed ``Pong`` per request,
in order. The client serialises publishers with a lock so that its FIFO of waiters
matches the order on the wire.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Sequence

from bench._impl import ALL_WORKLOADS
from bench._messages import BenchEvent, Ping, Pong
from bench._tracker import Tracker
from bench.baselines._common import cancel

LEN = struct.Struct("!I")
ACK, REPLY = b"\x00", b"\x01"


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tracker: Tracker) -> None:
    buf = b""
    while data := await reader.read(1 << 16):
        buf += data
        out, pos = [], 0
        while len(buf) - pos >= 4 and len(buf) - pos - 4 >= (size := LEN.unpack_from(buf, pos)[0]):
            body, pos = buf[pos + 4 : pos + 4 + size], pos + 4 + size
            if body[:1] == b"R":  # a request: "R" + Ping JSON
                pong = Pong(seq=Ping.model_validate_json(body[1:]).seq).model_dump_json().encode()
                out.append(REPLY + LEN.pack(len(pong)) + pong)
            else:
                tracker.hit(BenchEvent.model_validate_json(body).seq)
                out.append(ACK)
        buf = buf[pos:]
        writer.write(b"".join(out))
    writer.close()


class LeanSession:
    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker
        self._lock = asyncio.Lock()
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(serve(reader, writer, self._tracker))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        buf = b""
        while data := await self._reader.read(1 << 16):
            buf += data
            pos = 0
            while pos < len(buf):
                if buf[pos : pos + 1] == ACK:
                    self._waiting.popleft().set_result(b"")
                    pos += 1
                    continue
                if len(buf) - pos < 5 or len(buf) - pos - 5 < (size := LEN.unpack_from(buf, pos + 1)[0]):
                    break
                self._waiting.popleft().set_result(buf[pos + 5 : pos + 5 + size])
                pos += 5 + size
            buf = buf[pos:]
        for future in self._waiting:
            future.set_exception(ConnectionError("connection lost"))

    async def _send(self, bodies: Sequence[bytes]) -> list[bytes]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in bodies]
        async with self._lock:
            self._waiting.extend(futures)
            self._writer.write(b"".join(LEN.pack(len(body)) + body for body in bodies))
            await self._writer.drain()
        return [await future for future in futures]

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        await self._send([event.model_dump_json().encode() for event in events])

    async def request(self, seq: int) -> None:
        (reply,) = await self._send([b"R" + Ping(seq=seq).model_dump_json().encode()])
        if Pong.model_validate_json(reply).seq != seq:
            raise AssertionError(f"request {seq} got the reply to another request")

    async def close(self) -> None:
        await cancel(self._task)
        self._writer.close()
        self._server.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5.0)
        await self._server.wait_closed()


class TcpLean:
    name = "asyncio-tcp-lean"
    description = "lean hand-written asyncio TCP: one connection, handler inline in the reader, one ack byte each"
    workloads = ALL_WORKLOADS

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self, tracker: Tracker, concurrency: int) -> LeanSession:
        session = LeanSession(tracker)
        await session.start()
        return session


def make(url: str) -> TcpLean:
    return TcpLean(url)
