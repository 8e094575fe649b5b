"""Network faults for the SQL tests: a TCP proxy that can go silent or cut its links,
and a server that accepts connections and never says a word.

Both run in the test's own event loop, on loopback, on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib


class LinkProxy:
    """Forwards TCP from a local port to ``target_port``.

    `silence` makes every open connection swallow data both ways while its sockets stay
    open (a dead peer behind a firewall: no FIN, no RST); new connections are accepted
    and swallowed too. `resume` forwards again. `cut` closes every connection (the
    server went away) and `refuse` stops accepting new ones until `resume`.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._silent = False
        self._refusing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        self._silent = True

    async def resume(self) -> None:
        self._silent = False
        if self._refusing:
            self._refusing = False
            await self.start()

    async def cut(self, *, refuse: bool = False) -> None:
        """Close every open connection; with ``refuse``, stop listening until `resume`."""
        if refuse and self._server is not None:
            self._refusing = True
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self._silent:
            task = asyncio.create_task(self._swallow(reader))
        else:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._writers.add(up_writer)
            for src, dst in ((reader, up_writer), (up_reader, writer)):
                task = asyncio.create_task(self._pipe(src, dst))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _swallow(self, src: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await src.read(65536):
                pass

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if self._silent:
                    continue  # swallowed: the peer hears nothing, and no FIN/RST is sent
                dst.write(data)
                await dst.drain()
        if not self._silent:
            with contextlib.suppress(Exception):
                dst.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LinkProxy:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


class MuteServer:
    """Accepts TCP connections, reads what comes and never answers (no greeting)."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> MuteServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65536):
                pass

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()
