"""``pycomms run --metrics-port``: /metrics, /healthz and /readyz over real HTTP, on a
private Redis that the test kills to see readiness flip."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from otel_messages import OrderPlaced

import pycomms
from pycomms.testing import scale, unavailable

HERE = Path(__file__).parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, body) of an HTTP request to the probe endpoint."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * scale()
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout * scale():.0f}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test alone (the test kills it), on a free port."""
    if not os.path.exists(REDIS_SERVER):
        unavailable(f"redis-server not found at {REDIS_SERVER}")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, 10, "redis")
            yield f"redis://127.0.0.1:{port}/0?namespace=t{uuid.uuid4().hex[:12]}&aof_warning=false", server
        finally:
            server.kill()
            server.wait()


def test_metrics_health_and_readiness_over_http(private_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, redis_server = private_redis
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "support")])}
    command = [sys.executable, "-m", "pycomms", "run", "otel_app:services", "--url", url]
    command += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--grace", "1"]
    worker = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 200, 30, "/healthz to answer")
        wait_for(lambda: get(port, "/readyz")[0] == 200, 20, "/readyz to say ready")
        status, _, body = get(port, "/readyz")
        assert "serving shop, billing" in body

        async def publish() -> None:
            async with pycomms.connect(url) as bus:
                await bus.publish(*(OrderPlaced(order=n) for n in range(1, 21)))

        asyncio.run(publish())

        def consumed() -> float:
            text = get(port, "/metrics")[2]
            lines = [ln for ln in text.splitlines() if ln.startswith("messaging_client_consumed_messages_total{")]
            return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)

        # 20 events, 20 commands, and a second attempt of the two that fail
        wait_for(lambda: consumed() >= 42, 20, "42 handled messages on /metrics")
        status, ctype, text = get(port, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain")
        for name in (
            "messaging_client_sent_messages_total{",
            "messaging_client_operation_duration_seconds_bucket{",
            "messaging_process_duration_seconds_bucket{",
            "pycomms_messages_retried_total{",
            "pycomms_messages_dead_lettered_total{",
            "pycomms_handlers_active{",
        ):
            assert name in text, f"{name} missing from /metrics"
        assert 'messaging_consumer_group_name="billing"' in text

        def backlogs() -> dict[str, float]:
            lines = [ln for ln in get(port, "/metrics")[2].splitlines() if ln.startswith("pycomms_backlog{")]
            return {ln.split('group_name="', 1)[1].split('"', 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines}

        wait_for(lambda: backlogs() == {"shop": 0.0, "billing": 0.0}, 20, "pycomms_backlog 0 for both services")
        assert get(port, "/nothing")[0] == 404
        assert get(port, "/metrics", method="POST")[0] == 405

        redis_server.kill()  # the broker goes away: not ready, still alive
        wait_for(lambda: get(port, "/readyz")[0] == 503, 15, "/readyz to say not ready")
        assert get(port, "/healthz")[0] == 200
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _, stderr = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, stderr = worker.communicate()
    assert b"Traceback" not in stderr, stderr.decode()[-3000:]


def test_a_port_in_use_is_an_error_naming_it() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "support")])}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "pycomms", "run", "otel_app:services", "--url", "memory://busy"]
        command += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"error: --metrics-port {port}: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def two_free_ports() -> int:
    """N such that N and N + 1 are both free (a few draws: ephemeral ports are random)."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two free loopback ports in a row in 100 draws")


def test_each_worker_of_pycomms_run_workers_serves_its_own_port() -> None:
    """``--workers 2 --metrics-port N``: worker 1 on N, worker 2 on N + 1."""
    port = two_free_ports()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "support")])}
    url = "memory://workers"  # each worker its own in-process broker: readiness is all this test reads
    command = [sys.executable, "-m", "pycomms", "run", "otel_app:services", "--url", url, "--workers", "2"]
    command += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--grace", "1"]
    supervisor = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        for each in (port, port + 1):
            wait_for(lambda each=each: get(each, "/readyz")[0] == 200, 60, f"worker readiness on port {each}")
        bodies = {get(each, "/readyz")[2] for each in (port, port + 1)}
        assert len(bodies) == 2, "the two ports answered for the same node"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            _, stderr = supervisor.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            _, stderr = supervisor.communicate()
    assert b"cannot listen" not in stderr, stderr.decode()[-3000:]
