"""Helpers of the AMQP backend's own tests: the shared broker's URL, a TCP proxy that can
cut connections, a private RabbitMQ node that can be killed, namespace clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared_services import AMQP_URL, delete_amqp_namespaces

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def broker_address(url: str = AMQP_URL) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5672


def fresh_namespace() -> str:
    """A namespace no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


def url_for(namespace: str, base: str = AMQP_URL, **options: object) -> str:
    query = "&".join([f"namespace={namespace}", *(f"{k}={v}" for k, v in options.items())])
    return f"{base}{'&' if '?' in base else '?'}{query}"


def reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=3):
            return True
    except OSError:
        return False


def url_at(port: int, base: str = AMQP_URL) -> str:
    """``base`` (with its credentials) pointed at 127.0.0.1:``port``."""
    parts = urlsplit(base)
    userinfo = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}").geturl()


async def drop_namespace(namespace: str, base: str = AMQP_URL) -> int:
    """Drop ``namespace`` with the API users have (forced: a test may have left a node)."""
    import pycomms

    async with pycomms.connect(url_for(namespace, base, presence_interval=0.2)) as bus:
        return await bus.drop_namespace(force=True)


def leftovers(namespaces: list[str]) -> list[str]:
    """Queues and exchanges of ``namespaces`` on the shared local broker, as the local
    ``rabbitmqctl`` lists them (nothing when it cannot: not installed, another broker)."""
    if not namespaces or shutil.which("rabbitmqctl") is None or broker_address()[1] != 5672:
        return []
    prefixes = tuple(f"pycomms.{ns}." for ns in namespaces)
    names = []
    for kind in ("queues", "exchanges"):
        listing = subprocess.run(
            ["rabbitmqctl", f"list_{kind}", "-q", "--no-table-headers", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        names += [n.strip() for n in listing.stdout.splitlines() if n.strip().startswith(prefixes)]
    return sorted(names)


def delete_namespaces(namespaces: list[str], url: str = AMQP_URL) -> None:
    """Delete the queues and exchanges of ``namespaces`` (needs local ``rabbitmqctl``)."""
    delete_amqp_namespaces(namespaces, url)


Writer = asyncio.StreamWriter


class Proxy:
    """A TCP proxy in front of the broker whose connections a test can cut at will."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._frozen: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._new_connection = asyncio.Event()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, base: str = AMQP_URL) -> str:
        return url_at(self.port, base)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._accepting:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._new_connection.set()
        pair = (writer, up_writer)
        self._pairs.add(pair)
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer, writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            if writer in self._frozen:
                await self._closing.wait()  # a silent link: the client is never told
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Writer) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if client in self._frozen:
                    continue  # a silent network: bytes vanish, nobody is told
                writer.write(data)
                await writer.drain()

    def freeze(self) -> int:
        """Silence every current connection without closing it (a half-open link)."""
        self._frozen.update(client for client, _ in self._pairs)
        return len(self._pairs)

    def drop(self) -> int:
        """Cut every proxied connection at once (both sides see a reset)."""
        pairs = list(self._pairs)
        for client, upstream in pairs:
            client.transport.abort()
            upstream.transport.abort()
        return len(pairs)

    async def reconnected(self, timeout: float = 30.0) -> None:
        """Wait until a client connects through the proxy after this call."""
        self._new_connection.clear()
        async with asyncio.timeout(timeout):
            await self._new_connection.wait()

    def refuse(self, refuse: bool = True) -> None:
        """Refuse (abort) new connections while ``refuse`` is true."""
        self._accepting = not refuse

    async def close(self) -> None:
        self._closing.set()
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class SilentServer:
    """Accepts TCP connections, reads what comes and never answers (a hung broker)."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> SilentServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, base: str = AMQP_URL) -> str:
        return url_at(self.port, base)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65536):
                pass

    async def close(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a certificate for ``localhost`` / 127.0.0.1, made with the ``openssl`` CLI."""

    def openssl(command: str) -> None:
        args = ["openssl", *command.split()]
        subprocess.run(args, cwd=directory, capture_output=True, timeout=60, check=True)

    openssl("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pycomms-test-ca -keyout ca.key -out ca.pem")
    openssl("req -new -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr")
    (directory / "server.ext").write_text("subjectAltName = DNS:localhost, IP:127.0.0.1\n")
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem"
    )
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")


class PrivateBroker:
    """A RabbitMQ node of our own (node name, ports, data directory in a temp dir),
    which a test may SIGKILL and restart without touching the shared broker. With
    ``tls``, it also listens for AMQP over TLS on `tls_port`."""

    def __init__(self, root: Path, tls: TlsFiles | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.dist_port = free_port()
        self.node = f"pycomms{self.port}@localhost"
        self.env = {
            **os.environ,
            "HOME": str(root),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(root / "pid"),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
        }
        config = f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        if tls:
            config += (
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                f"ssl_options.cacertfile = {tls.ca}\nssl_options.certfile = {tls.cert}\n"
                f"ssl_options.keyfile = {tls.key}\nssl_options.verify = verify_none\n"
                "ssl_options.fail_if_no_peer_cert = false\n"
            )
        (root / "rabbitmq.conf").write_text(config)
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq-env.conf").write_text("")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 60.0) -> None:
        with (self.root / "server.log").open("ab") as log:
            self._process = subprocess.Popen(
                [RABBITMQ_SERVER],
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._booted():
            if time.monotonic() > deadline:
                raise RuntimeError(f"private RabbitMQ {self.node} did not start; see {self.root / 'server.log'}")
            time.sleep(0.2)

    def _booted(self) -> bool:
        text = (self.root / "server.log").read_text(errors="replace")
        ports = [self.port, self.tls_port] if self.tls_port else [self.port]
        booted = text.count("Starting broker... completed") > self._boots
        return booted and all(reachable(("127.0.0.1", port)) for port in ports)

    _boots = 0

    def kill(self) -> None:
        """SIGKILL the Erlang VM (no clean shutdown), then wait until the port is free."""
        self._boots = (self.root / "server.log").read_text(errors="replace").count("Starting broker... completed")
        pid = int((self.root / "pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while reachable(("127.0.0.1", self.port)) and time.monotonic() < deadline:
            time.sleep(0.1)

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout
