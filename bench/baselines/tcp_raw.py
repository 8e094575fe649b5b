"""``asyncio-tcp``: a hand-written asyncio TCP hand-off on loopback with per-message acks.

Frames are ``[u32 length][u8 kind][u64 id][JSON body]``. The client keeps one
connection; every publisher task writes its frames and awaits one ack per message,
sent by the server once the handler has run (a batch: its frames written together,
then all acks awaited). The server reads frames only while it has free handler slots
(TCP back-pressure), validates, handles and acks. Requests are answered with a reply
frame carrying the ``Pong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import Sequence

from bench._impl import ALL_WORKLOADS
from bench._messages import BenchEvent, Ping, Pong
from bench._tracker import Tracker
from bench.baselines._common import WorkerPool, cancel

HEADER = struct.Struct("!IBQ")  # length of what follows the u32, kind, id
EVENT, REQUEST, ACK, REPLY = 1, 2, 3, 4


def frame(kind: int, ident: int, body: bytes = b"") -> bytes:
    return HEADER.pack(HEADER.size - 4 + len(body), kind, ident) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    head = await reader.readexactly(HEADER.size)
    length, kind, ident = HEADER.unpack(head)
    body = await reader.readexactly(length - (HEADER.size - 4)) if length > HEADER.size - 4 else b""
    return kind, ident, body


class TcpServer:
    def __init__(self, tracker: Tracker, concurrency: int) -> None:
        self._tracker = tracker
        self._concurrency = concurrency
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)

        async def handle(item: tuple[int, int, bytes]) -> None:
            kind, ident, body = item
            if kind == EVENT:
                self._tracker.hit(BenchEvent.model_validate_json(body).seq)
                writer.write(frame(ACK, ident))
            else:
                ping = Ping.model_validate_json(body)
                writer.write(frame(REPLY, ident, Pong(seq=ping.seq).model_dump_json().encode()))

        pool: WorkerPool[tuple[int, int, bytes]] = WorkerPool(self._concurrency, handle)
        try:
            while True:
                await pool.wait_room()
                pool.put(await read_frame(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await pool.close()
            writer.close()
            self._connections.discard(task)

    async def close(self) -> None:
        """Called after the client hung up: connection handlers end on EOF by themselves
        (cancelling them instead makes asyncio's stream protocol log an error)."""
        if self._server is not None:
            self._server.close()
        if self._connections:
            _done, pending = await asyncio.wait(list(self._connections), timeout=5.0)
            for task in pending:
                await cancel(task)
        if self._server is not None:
            await self._server.wait_closed()


class TcpSession:
    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while True:
                _kind, ident, body = await read_frame(self._reader)
                future = self._waiting.pop(ident, None)
                if future is not None and not future.done():
                    future.set_result(body)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    async def _send(self, kind: int, bodies: Sequence[bytes]) -> list[bytes]:
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        futures = []
        for body in bodies:
            ident = next(self._ids)
            future: asyncio.Future[bytes] = loop.create_future()
            self._waiting[ident] = future
            futures.append(future)
            self._writer.write(frame(kind, ident, body))
        await self._writer.drain()
        return list(await asyncio.gather(*futures))

    async def publish(self, events: Sequence[BenchEvent]) -> None:
        await self._send(EVENT, [event.model_dump_json().encode() for event in events])

    async def request(self, seq: int) -> None:
        (reply,) = await self._send(REQUEST, [Ping(seq=seq).model_dump_json().encode()])
        pong = Pong.model_validate_json(reply)
        if pong.seq != seq:
            raise AssertionError(f"request {seq} got the reply to {pong.seq}")

    async def close(self) -> None:
        await cancel(self._task)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        await self._server.close()


class TcpRaw:
    name = "asyncio-tcp"
    description = "hand-written asyncio TCP: length-prefixed frames, one ack per message after the handler"
    workloads = ALL_WORKLOADS

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self, tracker: Tracker, concurrency: int) -> TcpSession:
        server = TcpServer(tracker, concurrency)
        session = TcpSession(server)
        try:
            await session.connect(await server.start())
        except BaseException:
            await session.close()
            raise
        return session


def make(url: str) -> TcpRaw:
    return TcpRaw(url)
