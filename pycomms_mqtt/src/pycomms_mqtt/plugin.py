"""The pluggy hooks that make ``mqtt://`` and ``mqtts://`` URLs work (entry point ``pycomms``).

aiomqtt is imported only when an MQTT URL is actually used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pycomms
from pycomms.spi import BackendConfig, SchemeInfo

from ._capabilities import CAPABILITIES

if TYPE_CHECKING:
    from ._transport import MqttTransport

SCHEMES = ("mqtt", "mqtts")


@pycomms.hookimpl
def pycomms_schemes() -> list[SchemeInfo]:
    return [
        SchemeInfo("mqtt", "pycomms-mqtt", "MQTT 5: shared subscriptions, persistent sessions", CAPABILITIES),
        SchemeInfo("mqtts", "pycomms-mqtt", "MQTT 5 over TLS", CAPABILITIES),
    ]


@pycomms.hookimpl
def pycomms_transport(config: BackendConfig) -> MqttTransport | None:
    if config.scheme not in SCHEMES:
        return None
    from ._options import parse_options
    from ._transport import MqttTransport

    return MqttTransport(config, parse_options(config.options))
