"""PyComms over MQTT 5 (``mqtt://``, ``mqtts://``): see docs/backends/mqtt.md."""

from __future__ import annotations

from ._capabilities import CAPABILITIES
from ._options import MqttOptions

__all__ = ["CAPABILITIES", "MqttOptions"]
