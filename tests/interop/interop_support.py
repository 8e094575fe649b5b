"""The helpers every interop test shares: a real PyComms worker process (``pycomms run`` on
interop_worker.py) and the foreign clients of examples/interop/, run as subprocesses.

A client is ``node examples/interop/node/<backend>.mjs ACTION ARGS...`` or
``python examples/interop/python/<backend>_client.py ACTION ARGS...``. It reads the
server's address from ``$INTEROP_URL`` and the PyComms namespace from
``$INTEROP_NAMESPACE``, prints one JSON object a line on stdout for what it received, and
exits 0 when it did what it was asked. ``node`` and the clients' npm packages must be
there: the packages are installed with ``npm ci`` at the first node client run when
they are missing (as ``.ci/run`` does up front); a missing ``node`` or ``npm``, or a
failed install, skips the node tests locally and fails them under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from interop_worker import Announce

import pycomms
from pycomms.testing import unavailable

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "examples" / "interop" / "node"
PYTHON_DIR = ROOT / "examples" / "interop" / "python"
WORKER = Path(__file__).with_name("interop_worker.py")
PYCOMMS = Path(sys.executable).with_name("pycomms")
LANGUAGES = ("node", "python")
CLIENT_TIMEOUT = 60.0  # seconds for one client run, start-up included, on a busy machine
READY_TIMEOUT = 60.0  # seconds for the worker to start and announce its service


def fresh_namespace() -> str:
    return f"io{uuid.uuid4().hex[:12]}"


def with_option(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


def client_command(language: str, backend: str) -> list[str]:
    """The command line that runs the ``language`` client of ``backend`` (fails or skips
    when it cannot run here)."""
    if language == "node":
        node = shutil.which("node")
        if node is None:
            unavailable("node is not installed (Debian package nodejs)")
        install_node_packages()
        return [node, str(NODE_DIR / f"{backend}.mjs")]
    return [sys.executable, str(PYTHON_DIR / f"{backend}_client.py")]


def install_node_packages() -> None:
    """``npm ci`` in examples/interop/node unless its packages are there, once for all
    test processes (a lock file: two workers would otherwise install into one folder)."""
    installed = NODE_DIR / "node_modules" / "cloudevents"
    with (NODE_DIR / ".npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        # checked under the lock: during another process's npm ci the folder is there, half filled
        if installed.is_dir():
            return
        npm = shutil.which("npm")
        if npm is None:
            unavailable(f"the node clients' packages are not installed and npm is missing: run 'npm ci' in {NODE_DIR}")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600
        )
    if done.returncode != 0 or not installed.is_dir():
        unavailable(f"'npm ci' in {NODE_DIR} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


@dataclass
class ClientRun:
    """A finished client run: its exit code, and the JSON lines it printed."""

    args: list[str]
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def check(self) -> ClientRun:
        assert self.returncode == 0, f"{' '.join(self.args)} exited {self.returncode}:\n{self.stderr}"
        return self


def _env(url: str, namespace: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "INTEROP_URL": url, "INTEROP_NAMESPACE": namespace, **(extra or {})}


def run_client(
    language: str,
    backend: str,
    url: str,
    namespace: str,
    *args: str,
    timeout: float = CLIENT_TIMEOUT,
    env: dict[str, str] | None = None,
) -> ClientRun:
    """Run one client to its end (killed after ``timeout``) and return what it printed;
    ``env``: more environment variables for it."""
    command = [*client_command(language, backend), *args]
    try:
        done = subprocess.run(
            command, env=_env(url, namespace, env), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"{' '.join(command)} did not finish within {timeout}s:\n{err}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return ClientRun(command, done.returncode, lines, done.stderr)


class BackgroundClient:
    """A client left running (a consumer), with its stdout read line by line. Those a
    failed test left running are stopped by `stop_leftovers` (an autouse fixture)."""

    started: ClassVar[list[BackgroundClient]] = []

    def __init__(
        self, language: str, backend: str, url: str, namespace: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.args = [*client_command(language, backend), *args]
        self.proc = subprocess.Popen(
            self.args, env=_env(url, namespace, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        BackgroundClient.started.append(self)

    @classmethod
    def stop_leftovers(cls) -> None:
        while cls.started:
            cls.started.pop().stop()

    def next_line(self, timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
        """The next JSON line it prints (fails if it exits or stays silent ``timeout`` s)."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                pytest.fail(f"{' '.join(self.args)} printed nothing within {timeout}s:\n{self.stop()}")
        line = self.proc.stdout.readline()
        if not line:
            err = self.stop()
            pytest.fail(f"{' '.join(self.args)} exited {self.proc.returncode}:\n{err}")
        return json.loads(line)  # type: ignore[no-any-return]

    def finish(self, timeout: float = CLIENT_TIMEOUT) -> ClientRun:
        """Wait for it to exit on its own; the rest of its output."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{' '.join(self.args)} did not finish within {timeout}s")
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        return ClientRun(self.args, self.proc.returncode, lines, err)

    def stop(self) -> str:
        """Killed if still running; its stderr ("" once read already: idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None and self.proc.stdout.closed:
            return ""
        _, err = self.proc.communicate(timeout=10)
        return err or ""


def run_clients_at_once(
    language: str,
    backend: str,
    url: str,
    namespace: str,
    *invocations: tuple[str, ...],
    env: dict[str, str] | None = None,
) -> list[list[dict[str, Any]]]:
    """Start one client per ``invocations`` entry (its arguments) at the same time, as
    independent programs would run; when each has exited 0, the lines each printed."""
    runs = [BackgroundClient(language, backend, url, namespace, *args, env=env) for args in invocations]
    try:
        return [run.finish().check().lines for run in runs]
    finally:
        for run in runs:
            run.stop()


class Worker:
    """``pycomms run tests/interop/interop_worker.py:services --url URL`` in a process of
    its own, recording what it handles to ``record`` (see interop_worker.py)."""

    def __init__(self, url: str, record: Path) -> None:
        self.url = url
        self.record = record
        record.touch()
        env = {**os.environ, "PYCOMMS_INTEROP_RECORD": str(record)}
        self.proc = subprocess.Popen(
            [str(PYCOMMS), "run", f"{WORKER}:services", "--url", url, "--grace", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the worker's node announces the ``interop`` service (its subscriptions
        are in place by then)."""

        async def poll() -> None:
            async with pycomms.connect(self.url) as bus:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if self.proc.poll() is not None:
                        break
                    if any("interop" in node.services for node in await bus.nodes()):
                        return
                    await asyncio.sleep(0.1)
            assert self.proc.poll() is None, f"the worker exited {self.proc.returncode}: {self.stop()}"
            pytest.fail(f"the worker did not announce its service within {timeout}s: {self.stop()}")

        asyncio.run(poll())

    def records(self, handler: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        return [line for line in lines if handler is None or line["handler"] == handler]

    def wait_for(
        self, handler: str, count: int, timeout: float = 30.0, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        """The records of ``handler`` once there are at least ``count`` of them (polled:
        the worker is another process, and its file is the only thing it tells)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records(handler) if where is None or where(r)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> str:
        """SIGTERM, a clean shutdown; its stderr (the log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return err


def dead_letters(url: str, count: int, service: str = "interop", timeout: float = 30.0) -> list[pycomms.DeadLetter]:
    """The dead letters of ``service`` once there are at least ``count`` (or at the timeout)."""

    async def poll() -> list[pycomms.DeadLetter]:
        async with pycomms.connect(url) as bus:
            deadline = time.monotonic() + timeout
            while True:
                found = await bus.dead_letters(service)
                if len(found) >= count or time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.05)

    return asyncio.run(poll())


def check_dead_letters(dead: list[pycomms.DeadLetter]) -> None:
    """The letters of the clients' ``request nope 1`` and ``bad`` actions: each with its
    reason, and an error that names what was wrong."""
    by_reason = sorted((d.reason, d.type) for d in dead)
    assert by_reason == [
        ("invalid", "interop.order_placed"),
        ("malformed", "?"),
        ("malformed", "interop.order_placed"),
        ("rejected", "interop.get_quote"),
    ], [(d.reason, d.type, d.error) for d in dead]
    errors = {(d.reason, d.type): d.error for d in dead}
    assert "JSON" in errors["malformed", "?"]
    assert "'time'" in errors["malformed", "interop.order_placed"]
    assert "RFC 3339" in errors["malformed", "interop.order_placed"]
    assert "order_id" in errors["invalid", "interop.order_placed"]
    assert errors["rejected", "interop.get_quote"] == "no price for 'nope'"


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
"""The W3C trace context the clients' burst carries as a CloudEvents extension attribute."""


def drop_namespace(url: str) -> None:
    """Drop the namespace of ``url``, with whatever a test left in it."""

    async def go() -> None:
        bus = await pycomms.connect(url)
        await bus.drop_namespace(force=True)

    asyncio.run(go())


def announce(url: str, count: int, text: str) -> None:
    """Have the worker on ``url`` publish ``count`` notices (the events a foreign consumer gets)."""

    async def go() -> None:
        async with pycomms.connect(url) as bus:
            await bus.send(Announce(count=count, text=text))

    asyncio.run(go())


def check_replies(quote: list[dict[str, Any]], refused: list[dict[str, Any]]) -> None:
    """A typed reply to ``request mug 3``, an error reply to ``request nope 1``."""
    assert [(r["type"], r["kind"], r["data"], r["pycommserror"]) for r in quote] == [
        ("interop.quote", "reply", {"sku": "mug", "qty": 3, "cents": 750}, None)
    ]
    assert [(r["type"], r["kind"], r["data"], r["pycommserror"]) for r in refused] == [
        ("pycomms.error", "reply", {"error": "no price for 'nope'"}, "rejected")
    ]


def check_handled(worker: Worker) -> None:
    """The 300 events of ``publish 300`` and the good one ``bad`` sends after its bad input,
    each handled exactly once, the SDK's extension attribute a header; the command of ``send 7``."""
    handled = worker.wait_for("order_placed", 301)
    assert sorted(r["data"]["order_id"] for r in handled) == [*range(300), 1000]
    assert len({r["id"] for r in handled}) == 301
    burst_records = [r for r in handled if r["data"]["order_id"] < 300]
    assert all(r["headers"] == {"traceparent": TRACEPARENT} and r["attempt"] == 1 for r in burst_records)
    assert [r["data"] for r in worker.wait_for("ship", 1)] == [{"order_id": 7, "carrier": "post"}]
