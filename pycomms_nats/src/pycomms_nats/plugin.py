"""The pluggy hooks that make ``nats://`` and ``tls://`` URLs work (entry point ``pycomms``).

nats-py is imported only when a NATS URL is actually used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pycomms
from pycomms.spi import BackendConfig, SchemeInfo

from ._capabilities import CAPABILITIES

if TYPE_CHECKING:
    from ._transport import NatsTransport

SCHEMES = ("nats", "tls")


@pycomms.hookimpl
def pycomms_schemes() -> list[SchemeInfo]:
    return [
        SchemeInfo("nats", "pycomms-nats", "NATS JetStream: streams, durable pull consumers", CAPABILITIES),
        SchemeInfo("tls", "pycomms-nats", "NATS JetStream over TLS", CAPABILITIES),
    ]


@pycomms.hookimpl
def pycomms_transport(config: BackendConfig) -> NatsTransport | None:
    if config.scheme not in SCHEMES:
        return None
    from ._options import parse_options
    from ._transport import NatsTransport

    return NatsTransport(config, parse_options(config.options))
