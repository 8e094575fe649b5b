"""The pluggy hooks that register ``amqp://`` and ``amqps://`` with PyComms."""

from __future__ import annotations

import pycomms
from pycomms.spi import BackendConfig, SchemeInfo

from ._transport import CAPABILITIES, AmqpTransport

SCHEMES = ("amqp", "amqps")


@pycomms.hookimpl
def pycomms_schemes() -> list[SchemeInfo]:
    """``amqp`` and ``amqps`` (TLS), served by pycomms-amqp."""
    return [
        SchemeInfo("amqp", "pycomms-amqp", "RabbitMQ (AMQP 0-9-1) via aio-pika", CAPABILITIES),
        SchemeInfo("amqps", "pycomms-amqp", "RabbitMQ (AMQP 0-9-1) over TLS via aio-pika", CAPABILITIES),
    ]


@pycomms.hookimpl
def pycomms_transport(config: BackendConfig) -> AmqpTransport | None:
    """An `AmqpTransport` for ``amqp://`` and ``amqps://`` URLs; validates the options."""
    if config.scheme not in SCHEMES:
        return None
    return AmqpTransport(config)
