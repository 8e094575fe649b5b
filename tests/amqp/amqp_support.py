"""Helpers of the AMQP backend's own tests: the shared broker's URL, a private RabbitMQ
node that can be killed, namespace clean-up (network faults: tests/support/fault_proxy.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fault_proxy import free_port
from shared_services import AMQP_URL, amqp_names

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
    return sorted(amqp_names("queues", namespaces) + amqp_names("exchanges", namespaces))


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
