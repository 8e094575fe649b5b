"""Helpers of the web-recipe tests: the recipes' directory, servers started as users
start them (real processes, real ports), and waiting for them to answer."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from pycomms.testing import scale

WEB = Path(__file__).resolve().parents[2] / "examples" / "web"
DJANGO = WEB / "django_shop"
BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0  # seconds (scaled): a server's start-up on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_with(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(PYCOMMS_URL=url, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", **extra)
    return env


@contextmanager
def server(
    args: list[str], *, url: str, cwd: Path, stop: signal.Signals = signal.SIGTERM, exit_codes: tuple[int, ...] = (0,)
) -> Iterator[Server]:
    """Run ``args`` as a process for the ``with`` block; at its end stop it with ``stop``
    and check it exits with one of ``exit_codes`` (its output is shown when not)."""
    proc = subprocess.Popen(
        args, cwd=cwd, env=env_with(url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    handle = Server(proc)
    try:
        yield handle
        proc.send_signal(stop)
        wait = START_TIMEOUT * scale()
        try:
            out, _ = proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            # every thread's stack (faulthandler, enabled in env_with) says where it hangs
            proc.send_signal(signal.SIGABRT)
            out = proc.communicate(timeout=wait)[0]
            raise AssertionError(f"{args[0]} did not exit within {wait:.0f}s of {stop.name}:\n{out}") from None
        handle.output = out
        assert proc.returncode in exit_codes, f"{args[0]} exited {proc.returncode}:\n{out}"
    finally:
        if proc.poll() is None:
            proc.kill()
            handle.output = proc.communicate()[0]


class Server:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.output = ""

    def wait_for_line(self, needle: str) -> str:
        """Read the output until a line containing ``needle``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT * scale()
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r}; output so far:\n{''.join(seen)}")

    def wait_for_http(self, url: str) -> None:
        """Poll ``url`` until it answers (a port has no event to await)."""
        deadline = time.monotonic() + START_TIMEOUT * scale()
        while True:
            assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}"
            try:
                httpx.get(url, timeout=5)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)


class Orders:
    """Order ids seen by an ``audit`` service in the test process (a separate node)."""

    def __init__(self) -> None:
        self.seen: collections.Counter[int] = collections.Counter()
        self._changed = threading.Condition()

    def add(self, order_id: int) -> None:
        with self._changed:
            self.seen[order_id] += 1
            self._changed.notify_all()

    def wait_for(self, *order_ids: int, timeout: float = 30.0) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: all(self.seen[o] for o in order_ids), timeout * scale())
        assert ok, f"orders {order_ids} not all seen; seen {dict(self.seen)}"
