"""The plugin manager: built-in plugins plus those found under the ``pycomms`` entry point."""

from __future__ import annotations

import functools
import importlib.metadata
import logging

import pluggy

from . import hookspecs

log = logging.getLogger("pycomms")

KNOWN_DISTRIBUTIONS = {
    "tcp": "pycomms-tcp",
    "redis": "pycomms-redis",
    "rediss": "pycomms-redis",
    "amqp": "pycomms-amqp",
    "amqps": "pycomms-amqp",
    "postgresql": "pycomms-sql",
    "postgres": "pycomms-sql",
    "sqlite": "pycomms-sql",
    "mysql": "pycomms-sql",
    "mariadb": "pycomms-sql",
    "nats": "pycomms-nats",
    "mqtt": "pycomms-mqtt",
    "mqtts": "pycomms-mqtt",
}


BROKEN: dict[str, str] = {}
"""Distribution name -> why its plugin failed to import (reported when its scheme is used)."""


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (loaded once, on first use).

    A plugin that fails to import is logged and skipped, so that one broken backend
    does not take down ``connect()`` to every other; using its scheme then says why."""
    pm = pluggy.PluginManager("pycomms")
    pm.add_hookspecs(hookspecs)
    from . import _memory

    pm.register(_memory, name="pycomms.memory")
    for entry in importlib.metadata.entry_points(group="pycomms"):
        if pm.get_plugin(entry.name) is not None or pm.is_blocked(entry.name):
            continue
        try:
            plugin = entry.load()
        except Exception as exc:
            dist = entry.dist.name if entry.dist is not None else entry.value
            BROKEN[dist] = f"{type(exc).__name__}: {exc}"
            log.warning("the pycomms plugin %r of %s failed to import and is skipped: %s", entry.name, dist, exc)
            continue
        pm.register(plugin, name=entry.name)
    return pm
