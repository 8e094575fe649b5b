"""Dropping a namespace: its tables (rows, presence, observer registrations and the
PostgreSQL triggers go with them) and, on PostgreSQL, its two NOTIFY functions.

The namespace lives in nothing else: the MariaDB schema lock is a session lock and the
NOTIFY channel exists only while someone listens.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ._db import Database
from ._schema import Tables

_FUNCTIONS = ("notify_messages", "notify_replies")


async def drop_tables(db: Database, tables: Tables, lock_wait: float) -> int:
    """Drop every table of ``tables`` (and PostgreSQL's functions of the namespace);
    return how many objects existed and were dropped. A table lock held elsewhere is
    waited for at most ``lock_wait`` seconds."""
    names = [table.name for table in reversed(tables.metadata.sorted_tables)]
    if db.kind == "sqlite":
        async with db.write() as conn:
            return await conn.run_sync(_drop, db.kind, names, tables.prefix, lock_wait)
    async with db.engine.begin() as conn:
        return await conn.run_sync(_drop, db.kind, names, tables.prefix, lock_wait)


def _drop(conn: Connection, kind: str, names: list[str], prefix: str, lock_wait: float) -> int:
    existing = [name for name in names if conn.dialect.has_table(conn, name)]
    functions: list[str] = []
    if kind == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(lock_wait * 1000)}ms'")
        wanted = [f"{prefix}_{function}" for function in _FUNCTIONS]
        found = conn.execute(
            text("SELECT proname FROM pg_proc WHERE proname = ANY(:names) AND pg_function_is_visible(oid)"),
            {"names": wanted},
        )
        functions = [row[0] for row in found]
    elif kind == "mysql":
        conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {max(1, round(lock_wait))}")
    quoted = [conn.dialect.identifier_preparer.quote(name) for name in existing]
    try:
        if kind == "sqlite":  # one table per statement
            for name in quoted:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        elif quoted:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(quoted)}")
    finally:
        if kind == "mysql":  # a session setting: the pooled connection must not keep it
            conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")
    for function in functions:
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {function}()")
    return len(existing) + len(functions)
