"""Network faults for the fault matrix: a TCP proxy that can go silent or cut its links,
a server that accepts and never answers, and a free port where nothing listens.

The proxy and the silent server run in an event loop of their own, in a daemon thread:
a backend that blocks or starves the loop under test cannot slow the fault down, and
their methods are plain blocking calls usable from any thread or loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")

_CALL_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _LoopThread:
    """A TCP server in an event loop of its own, in a daemon thread; ``start``/``stop``
    or ``with``.

    It accepts by itself rather than through `asyncio.Server`: closing a `Server` while
    accepted connections wait for their transport leaks their sockets (the transport's
    constructor fails on the closed server, and the socket is never closed).
    """

    port = 0

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._listener: socket.socket | None = None
        self._accepted_sockets: set[socket.socket] = set()
        """Accepted, not yet owned by a transport."""
        self._transports: set[asyncio.BaseTransport] = set()
        """Every open connection, accepted or made upstream."""
        self._handlers: set[asyncio.Task[None]] = set()

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Close the listener and every connection; the thread ends."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT)

    async def _listen(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept_ready)

    def _accept_ready(self) -> None:
        """Accept in a plain callback: an accepted socket is never in flight in a task
        that a shutdown could cancel (and lose it)."""
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # nothing more to accept (BlockingIOError), or out of descriptors
                return
            conn.setblocking(False)
            self._accepted_sockets.add(conn)
            task = asyncio.ensure_future(self._accepted(conn))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _accepted(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
        except BaseException:
            conn.close()
            raise
        finally:
            self._accepted_sockets.discard(conn)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._transports.add(transport)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a link ended, or our own shutdown
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _track(self, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)

    async def _close_all(self, *, abort: bool = False) -> None:
        """Close every connection: FIN, or RST where unsent bytes would hold it open."""
        for transport in list(self._transports):
            assert isinstance(transport, asyncio.Transport)
            if abort or transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()
        self._transports.clear()
        await asyncio.sleep(0)  # the sockets are closed in callbacks of the next loop turn

    async def _shutdown(self) -> None:
        """Stop accepting, then close every connection and end every handler."""
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
        handlers = set(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for conn in list(self._accepted_sockets):
            conn.close()
        await self._close_all(abort=True)
        await asyncio.sleep(0.01)  # the last sockets close in callbacks


class SilentServer(_LoopThread):
    """Accepts every connection, reads and discards what arrives, never writes a byte."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        await asyncio.Event().wait()  # the client closed its side; keep ours open, silent


class FaultProxy(_LoopThread):
    """A TCP proxy in front of ``target`` (host, port).

    - `silence`: nothing is forwarded any more, either way; every socket stays open and
      the proxy stops reading (kernel buffers fill up, as on a dead route). Connections
      made afterwards are accepted and held, silent.
    - `cut`: every connection is closed (FIN; RST where unsent bytes remain); connections made
      afterwards are accepted and closed at once.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target
        self.links = 0
        """Connections forwarded so far."""
        self._mode = "forward"
        self._flowing: asyncio.Event | None = None

    def silence(self) -> None:
        self._call(self._set_silent())

    def cut(self) -> None:
        self._call(self._set_cut())

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await super()._listen()

    async def _set_silent(self) -> None:
        assert self._flowing is not None
        self._mode = "silent"
        self._flowing.clear()
        for transport in self._transports:
            if isinstance(transport, asyncio.Transport) and not transport.is_closing():
                transport.pause_reading()

    async def _set_cut(self) -> None:
        self._mode = "cut"
        await self._close_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "cut":
            writer.close()
            return
        if self._mode == "silent":
            await self._set_silent()  # pauses this new connection too
            await asyncio.Event().wait()
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._track(up_writer)
        self.links += 1
        if self._mode != "forward":  # silenced or cut while connecting upstream
            await self._set_silent() if self._mode == "silent" else await self._set_cut()
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            up_writer.close()
        if self._mode == "silent":  # the client must learn nothing: its side stays open until stop
            await asyncio.Event().wait()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        while True:
            await self._flowing.wait()
            data = await reader.read(65536)
            if not data:
                if self._mode == "silent":  # a silent link carries no FIN either
                    await asyncio.Event().wait()
                return
            await self._flowing.wait()  # read just before the silence: held, never delivered
            writer.write(data)
            await writer.drain()
