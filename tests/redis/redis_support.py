"""Helpers of the Redis backend's own tests: the shared server's URL, private
``redis-server`` instances that tests may kill, and a TCP proxy that can go silent."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import redis
from shared_services import REDIS_URL

import pycomms

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def url_for(namespace: str, base: str = REDIS_URL, **options: object) -> str:
    query = "&".join([f"namespace={namespace}", *(f"{k}={v}" for k, v in options.items())])
    return f"{base}{'&' if '?' in base else '?'}{query}"


def namespace_keys(namespace: str, base: str = REDIS_URL) -> list[bytes]:
    """Every key of ``namespace`` on the server, found with SCAN."""
    client = redis.Redis.from_url(base, socket_timeout=5)
    try:
        return sorted(client.scan_iter(match=f"pycomms:{{{namespace}}}:*", count=1000))
    finally:
        client.close()


def drop_namespace(namespace: str, base: str = REDIS_URL) -> int:
    """Drop ``namespace`` the way users do (`Bus.drop_namespace`, forced: a killed
    worker's presence may linger); assert that SCAN then finds nothing of it."""

    async def drop() -> int:
        bus = await pycomms.connect(url_for(namespace, base=base, aof_warning="false"))
        return await bus.drop_namespace(force=True)

    removed = asyncio.run(drop())
    left = namespace_keys(namespace, base)
    assert not left, f"drop_namespace({namespace!r}) left {len(left)} key(s): {left[:10]}"
    return removed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own (own port and directory, AOF everysec) to kill at will."""

    def __init__(self, *, appendonly: bool = True, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pycomms-redis-"))
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--logfile", str(self.dir / "redis.log"), *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    if self.process.poll() is not None:
                        log = (self.dir / "redis.log").read_text()[-2000:]
                        raise RuntimeError(f"redis-server exited: {log}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer in time")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class StallingProxy:
    """Forwards TCP to a server; `stall` makes every open connection silently swallow
    data both ways (like a dead peer behind a firewall), while new connections work."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._stalled: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        for event in self._stalled:
            event.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled = asyncio.Event()
        self._stalled.append(stalled)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, stalled))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, stalled: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if stalled.is_set():
                    continue  # swallowed: the peer hears nothing, and no FIN/RST is sent
                dst.write(data)
                await dst.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()


class SilentServer:
    """Accepts TCP connections and reads what it is sent, but never answers: a hung
    server, or a firewall that lets the handshake through."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65536):
                pass

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()


class FaultProxy:
    """Forwards TCP to a server until told otherwise: `silence` makes every connection,
    open or new, swallow what it gets both ways (sockets stay open, nothing answers);
    `cut` closes every open connection (`refuse` also stops listening)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.silent = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        self.silent = True

    async def cut(self, *, refuse: bool = False) -> None:
        """Reset every open connection; with ``refuse``, new ones are refused too."""
        if refuse and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if not self.silent:
                    dst.write(data)
                    await dst.drain()

    async def close(self) -> None:
        await self.cut(refuse=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
