"""Network faults for every test folder: a free port where nothing listens, a server that
accepts and never answers (`SilentServer`), and a TCP proxy whose links can go silent or
be cut mid-session (`FaultProxy`).

Both servers run in an event loop of their own, in a daemon thread: a backend that
blocks or starves the loop under test cannot slow the fault down, and their methods are
plain blocking calls usable from any thread or loop (`FaultProxy.next_link` gives an
awaitable of the caller's loop). Use them with ``with``, or ``start()``/``stop()``.

On the path of every test through ``pythonpath`` in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

T = TypeVar("T")

NewLinks = Literal["forward", "silence", "close", "refuse"]
"""What happens to a connection made to the proxy after a fault: forwarded as before,
accepted and held silent, accepted and closed at once, or refused (nothing listens)."""

_CALL_TIMEOUT = 10.0
_CHUNK = 65536


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _LoopThread:
    """A TCP server on 127.0.0.1 in an event loop of its own, in a daemon thread.

    It accepts by itself rather than through `asyncio.Server`: closing a `Server` while
    accepted connections wait for their transport leaks their sockets (the transport's
    constructor fails on the closed server, and the socket is never closed).
    """

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        """Connections accepted so far."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._listener: socket.socket | None = None
        self._accepted_sockets: set[socket.socket] = set()
        """Accepted, not yet owned by a transport."""
        self._transports: set[asyncio.BaseTransport] = set()
        """Every open connection, accepted or made upstream."""
        self._handlers: set[asyncio.Task[Any]] = set()

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

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task of this loop that `stop` cancels."""
        task = asyncio.ensure_future(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        return task

    async def _listen(self) -> None:
        """Listen on `port` (a free one the first time, the same one again after `_unlisten`)."""
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept_ready)

    def _unlisten(self) -> None:
        """Stop listening: connections are refused."""
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    def _accept_ready(self) -> None:
        """Accept in a plain callback: an accepted socket is never in flight in a task
        that a shutdown could cancel (and lose it)."""
        while self._listener is not None:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # nothing more to accept (BlockingIOError), or out of descriptors
                return
            conn.setblocking(False)
            self.accepted += 1
            self._accepted_sockets.add(conn)
            self._spawn(self._accepted(conn))

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
            self._transports.discard(transport)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        """Stop accepting, then close every connection and end every handler."""
        self._unlisten()
        handlers = set(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for conn in list(self._accepted_sockets):
            conn.close()
        for transport in list(self._transports):
            _tcp(transport).abort()
        self._transports.clear()
        await asyncio.sleep(0.01)  # the last sockets close in callbacks of the next loop turns


def _tcp(transport: asyncio.BaseTransport) -> asyncio.Transport:
    assert isinstance(transport, asyncio.Transport), transport
    return transport


class SilentServer(_LoopThread):
    """Accepts every connection, reads and discards what arrives, never writes a byte
    (a hung server, or a firewall that lets the handshake through)."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(_CHUNK):
            pass
        await asyncio.Event().wait()  # the client closed its side; keep ours open, silent


class _Link:
    """One proxied connection: the client's side and the upstream side."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.silent = False

    def silence(self) -> None:
        """Nothing is forwarded any more, either way; both sockets stay open and nothing is
        read (kernel buffers fill up, as on a dead route)."""
        self.silent = True
        self.flowing.clear()
        for writer in (self.client, self.upstream):
            if not writer.transport.is_closing():
                _tcp(writer.transport).pause_reading()

    def close(self, *, reset: bool) -> None:
        """Close both sides: FIN (RST where unsent bytes would hold it open), or RST."""
        for writer in (self.client, self.upstream):
            transport = _tcp(writer.transport)
            if reset or transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()


class FaultProxy(_LoopThread):
    """A TCP proxy on 127.0.0.1 in front of ``target`` (host, port).

    - `silence`: the open links stop forwarding, either way; their sockets stay open and
      the client is never told (no FIN, no RST, not even when the server gives up).
    - `cut`: every open link is closed, both sides.
    - Each takes what happens to links made afterwards (`NewLinks`); `resume` forwards
      new links again (listening again on the same port after ``"refuse"``).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target
        self.links = 0
        """Connections forwarded so far."""
        self._new_links: NewLinks = "forward"
        self._open: set[_Link] = set()
        self._linked = asyncio.Event()
        """Set, and replaced by a fresh one, each time a link is forwarded."""

    def silence(self, *, new_links: NewLinks = "silence") -> int:
        """Silence every open link; returns how many there were."""
        return self._call(self._fault("silence", new_links))

    def cut(self, *, new_links: NewLinks = "close", reset: bool = False) -> int:
        """Close every open link (FIN, or RST with ``reset``); returns how many there were."""
        return self._call(self._fault("reset" if reset else "close", new_links))

    def resume(self) -> None:
        """Links made from now on are forwarded (links already silenced stay silent)."""
        self._call(self._set_new_links("forward"))

    def next_link(self, timeout: float) -> asyncio.Future[None]:
        """An awaitable of the calling loop, done once a link is forwarded after this call
        (`TimeoutError` if none is within ``timeout`` seconds)."""
        seen = self.links
        waiting = asyncio.run_coroutine_threadsafe(self._link_after(seen, timeout), self._loop)
        return asyncio.wrap_future(waiting, loop=asyncio.get_running_loop())

    async def _link_after(self, seen: int, timeout: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(timeout):
                while self.links <= seen:
                    await self._linked.wait()
        finally:
            self._handlers.discard(task)

    async def _fault(self, how: Literal["silence", "close", "reset"], new_links: NewLinks) -> int:
        await self._set_new_links(new_links)
        links = list(self._open)
        for link in links:
            if how == "silence":
                link.silence()
            else:
                self._open.discard(link)
                link.close(reset=how == "reset")
        await asyncio.sleep(0)  # the sockets are closed in callbacks of the next loop turn
        return len(links)

    async def _set_new_links(self, new_links: NewLinks) -> None:
        if new_links == "refuse":
            self._unlisten()
        elif self._listener is None:
            await self._listen()
        self._new_links = new_links

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._new_links in ("close", "refuse"):  # "refuse": accepted just before the listener closed
            return
        if self._new_links == "silence":
            _tcp(writer.transport).pause_reading()
            await asyncio.Event().wait()
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._transports.add(up_writer.transport)
        link = _Link(writer, up_writer)
        self._open.add(link)
        self.links += 1
        self._linked.set()
        self._linked = asyncio.Event()
        if self._new_links == "silence":  # a fault came while connecting upstream
            link.silence()
        elif self._new_links != "forward":
            self._open.discard(link)
            link.close(reset=False)
        pipes = [self._spawn(self._pipe(link, reader, up_writer)), self._spawn(self._pipe(link, up_reader, writer))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._open.discard(link)
            up_writer.close()
            self._transports.discard(up_writer.transport)
        if link.silent:  # the client must learn nothing: its side stays open until stop
            await asyncio.Event().wait()

    @staticmethod
    async def _pipe(link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await link.flowing.wait()
            data = await reader.read(_CHUNK)
            if not data:
                if link.silent:  # a silent link carries no FIN either
                    await asyncio.Event().wait()
                return
            await link.flowing.wait()  # read just before the silence: held, never delivered
            writer.write(data)
            await writer.drain()
