"""The plugin module: what the ``pycomms`` entry point in pyproject.toml names.

The core imports it in every process that calls `pycomms.connect` (whatever the
scheme), so it stays light: two hooks, no I/O, no heavy imports.
"""

from __future__ import annotations

import pycomms
from pycomms.spi import BackendConfig, SchemeInfo

from ._store import store_for
from ._transport import CAPABILITIES, ExampleTransport

SCHEME = "example"


@pycomms.hookimpl
def pycomms_schemes() -> list[SchemeInfo]:
    """What ``pycomms backends`` lists, and what an unknown scheme's error names."""
    return [
        SchemeInfo(
            SCHEME, "pycomms-example-backend", "a teaching example: an in-process store (example://NAME)", CAPABILITIES
        )
    ]


@pycomms.hookimpl
def pycomms_transport(config: BackendConfig) -> ExampleTransport | None:
    """Build the transport for ``example://NAME``; ``None`` for any other scheme.

    Called once per `pycomms.connect`, before anything is opened: validate here, so a
    bad URL fails at ``connect()`` naming the problem, and leave I/O to ``open()``.
    """
    if config.scheme != SCHEME:
        return None
    if config.options:
        raise pycomms.ConfigError(
            f"example:// takes no options besides the core's namespace and max_message_size; "
            f"got {sorted(config.options)}"
        )
    name = config.url.partition("://")[2].partition("?")[0].strip("/") or "default"
    return ExampleTransport(store_for(name, config.namespace))
