"""Helpers of the Redis backend's own tests: the shared server's URL, private
``redis-server`` instances that tests may kill (network faults: tests/support/fault_proxy.py)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import redis
from fault_proxy import free_port
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
