"""The options of ``tcp://`` URLs: one pydantic model, validated at `pycomms.connect`."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pycomms import ConfigError, spi
from pycomms.spi import BackendConfig

ACCEPTED = {
    "seeds": "comma-separated host:port list",
    "secret": "shared secret for the HMAC handshake (never logged)",
    "spool": "directory of the SQLite spool file, or 'memory' (default)",
    "spool_max_messages": "integer >= 1",
    "spool_max_bytes": "integer >= 1024",
    "heartbeat": "seconds between heartbeats, 0.05..60",
    "window": "integer >= 1: unacked messages per service instance before publishers wait, then spool",
    "window_wait": "seconds 0..60 publish() waits for room in a full window before spooling (0: spool at once)",
    "connect_timeout": "seconds 0.1..300 (default 5): dialling a peer, TLS and the handshake, each side",
    "operation_timeout": "seconds 0.1..300 (default 5): dead-letter calls to peers, a full link taking data",
    "discovery": "'local' (default), 'off'",
    "mdns": "true/false (LAN discovery with zeroconf; default false)",
    "registry": "directory of the same-host registry",
    "advertise": "host other nodes should dial (default: the listen host)",
    "tls_cert": "PEM certificate file",
    "tls_key": "PEM private key file",
    "tls_ca": "PEM CA bundle: verify peers (mutual TLS when both sides set it)",
}


class TcpOptions(BaseModel):
    """Validated options of one ``tcp://`` transport."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    seeds: tuple[tuple[str, int], ...] = ()
    secret: str | None = Field(default=None, repr=False)
    spool: str = "memory"
    spool_max_messages: int = Field(default=100_000, ge=1)
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    heartbeat: float = Field(default=1.0, ge=0.05, le=60.0)
    window: int = Field(default=10_000, ge=1)
    window_wait: float = Field(default=1.0, ge=0.0, le=60.0)
    connect_timeout: float = Field(default=5.0, ge=0.1, le=300.0)
    operation_timeout: float = Field(default=5.0, ge=0.1, le=300.0)
    discovery: str = "local"
    mdns: bool = False
    registry: str = ""
    advertise: str = ""
    tls_cert: str | None = None
    tls_key: str | None = Field(default=None, repr=False)
    tls_ca: str | None = None

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        out = []
        for item in value:
            if isinstance(item, str):
                host, sep, port = item.rpartition(":")
                if not sep or not host or not port.isdigit():
                    raise ValueError(f"seed {item!r} is not host:port")
                out.append((host.strip("[]"), int(port)))
            else:
                out.append(tuple(item))
        return tuple(out)

    @field_validator("discovery")
    @classmethod
    def _discovery(cls, value: str) -> str:
        if value not in ("local", "off"):
            raise ValueError("must be 'local' or 'off'")
        return value

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_ca)

    @property
    def spool_path(self) -> str:
        """SQLite database path (``:memory:`` unless ``spool=DIR``)."""
        if self.spool in ("", "memory", ":memory:"):
            return ":memory:"
        return str(Path(self.spool) / "pycomms-spool.sqlite3")

    @property
    def listens_everywhere(self) -> bool:
        """The listen host is a wildcard address."""
        return self.host in ("", "0.0.0.0", "::")

    def advertised_host(self) -> str:
        """The host other nodes should dial: ``advertise``, the listen host, or for a
        wildcard the address of the interface with the default route."""
        if self.advertise:
            return self.advertise
        if not self.listens_everywhere:
            return self.host
        try:  # connecting a UDP socket sends nothing
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("192.0.2.1", 9))
                return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"

    def ssl_contexts(self) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
        """``(server, client)`` TLS contexts, or ``(None, None)`` without TLS."""
        if not self.tls:
            return None, None
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False  # peers are dialled by address; the CA and the handshake identify them
        if self.tls_cert and self.tls_key:
            server.load_cert_chain(self.tls_cert, self.tls_key)
            client.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_ca:
            server.load_verify_locations(self.tls_ca)
            server.verify_mode = ssl.CERT_REQUIRED
            client.load_verify_locations(self.tls_ca)
            client.verify_mode = ssl.CERT_REQUIRED
        else:
            client.verify_mode = ssl.CERT_NONE
        return server, client

    def registry_dir(self, namespace: str) -> Path:
        """The same-host registry directory of ``namespace``."""
        if self.registry:
            base = Path(self.registry)
        elif runtime := os.environ.get("XDG_RUNTIME_DIR"):
            base = Path(runtime) / "pycomms"
        else:
            base = Path(tempfile.gettempdir()) / f"pycomms-{os.getuid()}"
        return base / namespace


def parse_options(config: BackendConfig) -> TcpOptions:
    """Build `TcpOptions` from the URL's host/port and ``config.options``.

    Raises `ConfigError` naming the bad option and what it accepts; never echoes a
    secret's value.
    """
    try:
        parts = urlsplit(config.url)
        url_port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid tcp URL {config.redacted_url!r}: {exc}") from None
    raw: dict[str, Any] = {}
    if parts.hostname:
        raw["host"] = parts.hostname
    if url_port is not None:
        raw["port"] = url_port
    unknown = sorted(set(config.options) - set(ACCEPTED))
    if unknown:  # host and port are fields too, but come from the URL only
        accepted = ", ".join(sorted(ACCEPTED))
        raise ConfigError(f"tcp: unknown option {unknown[0]!r}. Accepted options: {accepted}")
    raw.update(config.options)
    options = spi.parse_options(TcpOptions, raw, backend="tcp", secret=("secret", "tls_key"), hints=ACCEPTED)
    if bool(options.tls_cert) != bool(options.tls_key):
        raise ConfigError("tcp:// options tls_cert and tls_key must be given together")
    if options.secret is not None and not options.secret:
        raise ConfigError("tcp:// option secret must not be empty")
    return options
