"""PyComms over NATS JetStream: ``pycomms.connect("nats://host:4222?namespace=app")``.

Installing this distribution is all it takes; the core finds it through the ``pycomms``
entry point. See docs/backends/nats.md for the mapping onto JetStream and the options.

The names below are imported on first use, so that loading the plugin (which every
``pycomms.connect`` does, whatever the scheme) does not import nats-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._capabilities import CAPABILITIES
    from ._names import Names
    from ._options import NatsOptions
    from ._transport import NatsTransport

__all__ = ["CAPABILITIES", "Names", "NatsOptions", "NatsTransport"]

_HOMES = {
    "CAPABILITIES": "._capabilities",
    "Names": "._names",
    "NatsOptions": "._options",
    "NatsTransport": "._transport",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
