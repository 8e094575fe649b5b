"""The plugin manager: built-in plugins plus those found under the ``pycomms`` entry point."""

from __future__ import annotations

import functools

import pluggy

from . import hookspecs

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
}


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (loaded once, on first use)."""
    pm = pluggy.PluginManager("pycomms")
    pm.add_hookspecs(hookspecs)
    from . import _memory

    pm.register(_memory, name="pycomms.memory")
    pm.load_setuptools_entrypoints("pycomms")
    return pm
