"""The pluggy hooks that make ``redis://`` and ``rediss://`` URLs work (entry point ``pycomms``).

redis-py is imported only when a Redis URL is actually used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pycomms
from pycomms.spi import BackendConfig, SchemeInfo

from ._capabilities import CAPABILITIES

if TYPE_CHECKING:
    from ._transport import RedisTransport

SCHEMES = ("redis", "rediss")


@pycomms.hookimpl
def pycomms_schemes() -> list[SchemeInfo]:
    return [
        SchemeInfo("redis", "pycomms-redis", "Redis Streams with consumer groups", CAPABILITIES),
        SchemeInfo("rediss", "pycomms-redis", "Redis Streams with consumer groups, over TLS", CAPABILITIES),
    ]


@pycomms.hookimpl
def pycomms_transport(config: BackendConfig) -> RedisTransport | None:
    if config.scheme not in SCHEMES:
        return None
    from ._options import parse_options
    from ._transport import RedisTransport

    return RedisTransport(config, parse_options(config.options))
