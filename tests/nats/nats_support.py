"""Helpers of the NATS backend's tests: the shared server's URL, fresh namespaces, and
private nats-server processes (single or a three-node JetStream cluster on loopback)
for the fault tests, each in a temporary directory of its own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from fault_proxy import free_port
from system_tools import sbin_tool

from pycomms import connect
from pycomms.testing import run_strict, scale, unavailable

NATS_URL = os.environ.get("PYCOMMS_TEST_NATS_URL", "nats://127.0.0.1:4222")
NATS_SERVER = os.environ.get("PYCOMMS_TEST_NATS_SERVER") or sbin_tool("nats-server") or "/usr/sbin/nats-server"


def new_namespace() -> str:
    return f"n{uuid.uuid4().hex[:12]}"


def url_for(namespace: str, base: str = NATS_URL, **options: object) -> str:
    query = "&".join([f"namespace={namespace}", *(f"{k}={v}" for k, v in options.items())])
    return f"{base}{'&' if '?' in base else '?'}{query}"


def drop_namespace(url: str) -> None:
    async def drop() -> None:
        bus = await connect(url)
        await bus.drop_namespace(force=True)

    run_strict(drop, 60)


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout * scale()
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nats-server did not listen on 127.0.0.1:{port} within {timeout}s")


class PrivateNats:
    """One private nats-server with JetStream (file storage under ``directory``), or
    without it (``jetstream=False``)."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        cluster: tuple[str, int, list[int]] | None = None,
        extra: tuple[str, ...] = (),
        jetstream: bool = True,
    ):
        if not os.path.exists(NATS_SERVER):
            unavailable(f"nats-server not found at {NATS_SERVER}")
        self.directory = directory
        self.port = port or free_port()
        self.cluster = cluster
        self.extra = extra
        self.jetstream = jetstream
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.directory / "js")]
        if self.cluster is not None:
            name, cluster_port, routes = self.cluster
            args += ["-n", name, "--cluster_name", "pycomms-test", "--cluster", f"nats://127.0.0.1:{cluster_port}"]
            args += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes)]
        args += self.extra
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the process holds it
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_port(self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        self.kill()


def make_cluster(root: Path, size: int = 3) -> list[PrivateNats]:
    cluster_ports = [free_port() for _ in range(size)]
    servers = []
    for i in range(size):
        directory = root / f"n{i}"
        directory.mkdir(parents=True, exist_ok=True)
        routes = [p for j, p in enumerate(cluster_ports) if j != i]
        servers.append(PrivateNats(directory, cluster=(f"n{i}", cluster_ports[i], routes)))
    return servers


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
