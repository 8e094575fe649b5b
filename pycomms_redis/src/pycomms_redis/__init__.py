"""PyComms over Redis Streams: ``pycomms.connect("redis://host:6379/0?namespace=app")``.

Installing this distribution is all it takes; the core finds it through the ``pycomms``
entry point. See docs/backends/redis.md for the mapping onto Redis and the options.

The names below are imported on first use, so that loading the plugin (which every
``pycomms.connect`` does, whatever the scheme) does not import redis-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._capabilities import CAPABILITIES
    from ._keys import Keys
    from ._options import RedisOptions
    from ._transport import RedisTransport

__all__ = ["CAPABILITIES", "Keys", "RedisOptions", "RedisTransport"]

_HOMES = {
    "CAPABILITIES": "._capabilities",
    "Keys": "._keys",
    "RedisOptions": "._options",
    "RedisTransport": "._transport",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
