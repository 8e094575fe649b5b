"""The ``amqp://`` options: one pydantic model, validated when the bus is built."""

from __future__ import annotations

import ssl
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pycomms import ConfigError, spi


class AmqpOptions(BaseModel):
    """Options of ``amqp://`` and ``amqps://``, from the URL query or `pycomms.connect` keywords."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_type: Literal["classic", "quorum"] = "classic"
    """Type of the service and command queues. Every node of a namespace must agree."""
    delivery_limit: int = Field(20, ge=1)
    """Quorum queues only: a message delivered this many times without being settled
    (its consumer kept dying) goes to the service's dead letters."""
    heartbeat: int = Field(15, ge=0)
    """AMQP connection heartbeat in seconds (0 turns it off; not advised)."""
    presence_interval: float = Field(2.0, gt=0)
    """Seconds between presence heartbeats; a silent node is dropped after three."""
    connect_timeout: float = Field(10.0, gt=0)
    """Deadline of connecting: TCP, TLS, the AMQP handshake and authentication, and
    declaring this node's part of the topology (``connect()``, each reconnection
    attempt). RabbitMQ itself gives a client 10 s for the handshake."""
    operation_timeout: float = Field(10.0, gt=0)
    """Deadline of every later call: ``publish()``/``send()`` wait this long for the
    broker's confirm (including a reconnection or a memory alarm), and so do settling
    (a retry or dead letter republished), presence, dead-letter listing, replay and
    purge, and dropping the namespace. Also accepted under its old name
    ``publish_timeout``."""
    reconnect_max_delay: float = Field(5.0, gt=0)
    """Upper bound of the backoff between reconnection attempts."""
    cafile: str | None = None
    """``amqps://``: CA bundle to verify the broker with (default: system CAs)."""
    certfile: str | None = None
    """``amqps://``: client certificate (PEM)."""
    keyfile: str | None = None
    """``amqps://``: client private key (PEM)."""
    verify: bool = True
    """``amqps://``: verify the broker's certificate and host name."""


def parse_options(options: dict[str, Any]) -> AmqpOptions:
    """Validate ``options``; raise `ConfigError` naming the bad option and what it accepts."""
    return spi.parse_options(AmqpOptions, options, backend="amqp", renamed={"publish_timeout": "operation_timeout"})


def tls_context(scheme: str, options: AmqpOptions) -> ssl.SSLContext | None:
    """The TLS context of an ``amqps://`` URL (``None`` for ``amqp://``); a CA bundle,
    certificate or key that cannot be loaded is a `ConfigError` naming its option."""
    if scheme != "amqps":
        return None
    try:
        context = ssl.create_default_context(cafile=options.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"amqp: option 'cafile': cannot load {options.cafile!r}: {exc}") from None
    if options.certfile:
        try:
            context.load_cert_chain(options.certfile, options.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"amqp: options 'certfile'/'keyfile': cannot load the certificate: {exc}") from None
    elif options.keyfile:
        raise ConfigError("amqp: option 'keyfile' needs 'certfile' too")
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
