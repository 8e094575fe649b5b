"""Helpers for the tcp backend tests: worker processes, free ports, timeouts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pycomms.testing import scale

__all__ = ["Worker", "free_port", "scale", "start_worker", "workers"]

WORKER = Path(__file__).with_name("tcp_worker.py")


class Worker:
    """A worker OS process (tcp_worker.py) and its node id."""

    def __init__(self, proc: asyncio.subprocess.Process, node_id: str) -> None:
        self.proc = proc
        self.node_id = node_id

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15 * scale()):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_worker(role: str, url: str | None, env: dict[str, str] | None = None) -> Worker:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        role,
        url or "",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20 * scale()):
            line = (await proc.stdout.readline()).decode()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"worker {role} did not become ready") from None
    if not line.startswith("READY "):
        await proc.wait()
        raise AssertionError(f"worker {role} failed to start: {line!r}")
    return Worker(proc, line.split()[1])


@asynccontextmanager
async def workers(
    role: str, url: str | None, count: int, env: dict[str, str] | None = None
) -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for _ in range(count):
            started.append(await start_worker(role, url, env))
        yield started
    finally:
        await asyncio.gather(*(w.stop() for w in started))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
