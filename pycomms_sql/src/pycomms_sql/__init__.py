"""pycomms-sql: the PyComms bus in PostgreSQL, SQLite or MariaDB/MySQL tables.

Install it and use a database URL::

    async with pycomms.connect("postgresql://app@db/app", services=[billing]) as bus: ...

`publish_in` and `send_in` write messages inside your own SQLAlchemy transaction
(the outbox): they are delivered if and only if that transaction commits.
"""

from __future__ import annotations

from ._options import SqlOptions
from ._outbox import publish_in, send_in
from ._schema import SCHEMA_VERSION
from ._transport import SqlTransport

__all__ = ["SCHEMA_VERSION", "SqlOptions", "SqlTransport", "publish_in", "send_in"]
