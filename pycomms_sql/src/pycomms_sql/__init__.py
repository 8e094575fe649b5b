"""pycomms-sql: the PyComms bus in PostgreSQL, SQLite or MariaDB/MySQL tables.

Install it and use a database URL::

    async with pycomms.connect("postgresql://app@db/app", services=[billing]) as bus: ...

`publish_in` and `send_in` write messages inside your own SQLAlchemy transaction
(the outbox): they are delivered if and only if that transaction commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._options import SqlOptions
    from ._outbox import publish_in, send_in
    from ._schema import SCHEMA_VERSION
    from ._transport import SqlTransport

__all__ = ["SCHEMA_VERSION", "SqlOptions", "SqlTransport", "publish_in", "send_in"]

_HOMES = {
    "SCHEMA_VERSION": "._schema",
    "SqlOptions": "._options",
    "SqlTransport": "._transport",
    "publish_in": "._outbox",
    "send_in": "._outbox",
}


def __getattr__(name: str) -> Any:
    """Import on first use: the plugin module loads with every ``pycomms`` command, and
    SQLAlchemy takes most of a second to import."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pycomms_sql' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
