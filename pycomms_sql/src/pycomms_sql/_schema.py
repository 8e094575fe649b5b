"""The tables of one namespace, and their creation (idempotent, safe under concurrent starts).

Every namespace gets its own set of tables named ``pycomms_<ns>_<table>``; a namespace
that is not a short lower-case identifier is shortened and suffixed with a hash so
names stay within the 63/64-character limits of PostgreSQL and MariaDB.

Schema version 1. Upgrades: ``SCHEMA_VERSION`` grows by one per change and
``_UPGRADES[n]`` holds the statements taking version ``n`` to ``n + 1``; they run under
the same lock as the creation, so the first process of a new release migrates and
the others wait for it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._db import Database
from ._url import Engine

SCHEMA_VERSION = 1
# Seconds a start waits for another process's schema creation, and the DDL for the
# table locks it needs, before failing.
SCHEMA_LOCK_WAIT = 60
_UPGRADES: dict[int, Callable[[Connection, Tables], None]] = {}
_IDENT = re.compile(r"^[a-z0-9_]{1,36}$")

# Row ids: BIGINT, except the SQLite rowid alias which must be spelled INTEGER.
_Id = BigInteger().with_variant(Integer(), "sqlite")
# MariaDB's BLOB stops at 64 KiB; messages go up to the configured size limit.
_Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def namespace_ident(namespace: str) -> str:
    """A short identifier for ``namespace``, unique per namespace.

    At most 30 characters, so that ``pycomms_`` + it + the longest suffix
    (``_dead_letters_service``) stays within PostgreSQL's 63-character identifiers.
    """
    if _IDENT.match(namespace) and len(namespace) <= _MAX_PLAIN:
        return namespace
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:10]
    safe = re.sub(r"[^a-z0-9_]", "_", namespace.lower())[: _MAX_PLAIN - 11]
    return f"{safe}_{digest}"


_MAX_PLAIN = 30


@dataclass(frozen=True)
class Tables:
    """The tables of one namespace."""

    prefix: str
    metadata: MetaData
    meta: Table
    subscriptions: Table
    routes: Table
    messages: Table
    dead_letters: Table
    nodes: Table
    replies: Table

    @property
    def channel(self) -> str:
        """The PostgreSQL NOTIFY channel of the namespace."""
        return self.prefix


def make_tables(namespace: str) -> Tables:
    prefix = f"pycomms_{namespace_ident(namespace)}"
    md = MetaData()
    meta = Table(f"{prefix}_meta", md, Column("name", String(64), primary_key=True), Column("value", String(255)))
    subscriptions = Table(
        f"{prefix}_subscriptions",
        md,
        Column("type", String(255), primary_key=True),
        Column("service", String(100), primary_key=True),
        Column("kind", String(8), nullable=False),
    )
    # One handling service per command type: the first to subscribe.
    routes = Table(
        f"{prefix}_routes",
        md,
        Column("type", String(255), primary_key=True),
        Column("service", String(100), nullable=False),
    )
    messages = Table(
        f"{prefix}_messages",
        md,
        Column("id", _Id, primary_key=True, autoincrement=True),
        # A service name for events, replays and claimed commands; "@" + type for a
        # command not yet claimed (routed to a handling service at claim time).
        Column("queue", String(255), nullable=False),
        Column("msg_id", String(64), nullable=False),
        Column("data", _Blob, nullable=False),
        Column("attempt", Integer, nullable=False, default=1),
        # When the row may next be claimed: publish time, retry time, or lease end.
        Column("available_at", Double, nullable=False),
        Column("lease_token", String(32), nullable=True),
        Column("created_at", Double, nullable=False),
    )
    Index(f"{prefix}_messages_claim", messages.c.queue, messages.c.available_at, messages.c.id)
    dead_letters = Table(
        f"{prefix}_dead_letters",
        md,
        Column("id", _Id, primary_key=True, autoincrement=True),
        Column("service", String(100), nullable=False),
        Column("msg_id", String(64), nullable=False),
        Column("failed_at", Double, nullable=False),
        Column("letter", _Blob, nullable=False),
    )
    Index(f"{prefix}_dead_letters_service", dead_letters.c.service, dead_letters.c.id)
    nodes = Table(
        f"{prefix}_nodes",
        md,
        Column("id", String(64), primary_key=True),
        Column("info", Text, nullable=False),
        Column("last_seen", Double, nullable=False),
        Column("expires_at", Double, nullable=False),
    )
    replies = Table(
        f"{prefix}_replies",
        md,
        Column("id", _Id, primary_key=True, autoincrement=True),
        Column("node", String(64), nullable=False),
        Column("data", _Blob, nullable=False),
        Column("created_at", Double, nullable=False),
    )
    Index(f"{prefix}_replies_node", replies.c.node, replies.c.id)
    return Tables(prefix, md, meta, subscriptions, routes, messages, dead_letters, nodes, replies)


async def ensure_schema(db: Database, tables: Tables) -> None:
    """Create or upgrade the namespace's tables unless they are current.

    Concurrent first starts serialize on a lock (a PostgreSQL advisory lock, a MariaDB
    named lock, SQLite's write lock), so only one process runs the DDL. Waiting for
    that lock, and the DDL waiting for the table locks it needs, both give up after
    `SCHEMA_LOCK_WAIT` seconds with an error instead of hanging.
    """
    async with db.read() as conn:
        if await _version(conn, tables) == SCHEMA_VERSION:
            return
    if db.kind == "postgresql":
        await _create_on_postgresql(db.engine, tables)
    elif db.kind == "mysql":
        await _create_on_mysql(db.engine, tables)
    else:
        async with db.write() as conn:  # BEGIN IMMEDIATE: holds SQLite's write lock
            await conn.run_sync(_create_or_upgrade, db.kind, tables)


async def _create_on_postgresql(engine: AsyncEngine, tables: Tables) -> None:
    """Under a transaction-scoped advisory lock: commit or rollback releases it."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{SCHEMA_LOCK_WAIT}s'")
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": _lock_name(tables)})
        await conn.run_sync(_create_or_upgrade, "postgresql", tables)


async def _create_on_mysql(engine: AsyncEngine, tables: Tables) -> None:
    """Under a named lock, on a connection that is closed afterwards.

    ``GET_LOCK`` belongs to the session, not to a transaction: returned to the pool
    after an error or a cancellation between GET_LOCK and RELEASE_LOCK, the connection
    would keep the lock, and every other process would wait for it. Closing the
    session releases the lock on every path and discards the shortened
    ``lock_wait_timeout`` (MariaDB's default is a day): no pooled connection
    inherits either.
    """
    async with engine.connect() as conn:
        try:
            await conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {SCHEMA_LOCK_WAIT}")
            locked = await conn.scalar(
                text("SELECT GET_LOCK(:n, :wait)"), {"n": _lock_name(tables), "wait": SCHEMA_LOCK_WAIT}
            )
            if locked != 1:
                raise TimeoutError(
                    f"waited {SCHEMA_LOCK_WAIT}s for another process to create the tables {tables.prefix}_*"
                )
            await conn.run_sync(_create_or_upgrade, "mysql", tables)
            await conn.commit()
        finally:
            await conn.invalidate()


def _lock_name(tables: Tables) -> str:
    return f"{tables.prefix}_schema"


async def _version(conn: AsyncConnection, tables: Tables) -> int | None:
    exists = await conn.run_sync(lambda sync: sync.dialect.has_table(sync, tables.meta.name))
    if not exists:
        return None
    value = (
        await conn.execute(select(tables.meta.c.value).where(tables.meta.c.name == "schema_version"))
    ).scalar_one_or_none()
    return int(value) if value is not None else None


def _create_or_upgrade(conn: Connection, kind: Engine, tables: Tables) -> None:
    version = None
    if conn.dialect.has_table(conn, tables.meta.name):
        value = conn.execute(select(tables.meta.c.value).where(tables.meta.c.name == "schema_version")).scalar()
        version = int(value) if value is not None else None
    if version == SCHEMA_VERSION:
        return
    if version is None:
        tables.metadata.create_all(conn, checkfirst=True)
        if kind == "postgresql":
            _create_notify_trigger(conn, tables)
        conn.execute(tables.meta.insert().values(name="schema_version", value=str(SCHEMA_VERSION)))
        return
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"tables {tables.prefix}_* are at schema version {version}, newer than this pycomms-sql "
            f"({SCHEMA_VERSION}); upgrade pycomms-sql"
        )
    while version < SCHEMA_VERSION:
        _UPGRADES[version](conn, tables)
        version += 1
    conn.execute(tables.meta.update().where(tables.meta.c.name == "schema_version").values(value=str(SCHEMA_VERSION)))


def _create_notify_trigger(conn: Connection, tables: Tables) -> None:
    """A statement-level trigger that NOTIFYs each queue written to, and each node a
    reply is stored for, when the writing transaction commits (outbox included)."""
    p, ch = tables.prefix, tables.channel
    conn.exec_driver_sql(
        f"""CREATE OR REPLACE FUNCTION {p}_notify_messages() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{ch}', q) FROM (SELECT DISTINCT queue AS q FROM new_rows) d;
            RETURN NULL;
        END $$"""
    )
    conn.exec_driver_sql(
        f"""CREATE OR REPLACE FUNCTION {p}_notify_replies() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{ch}', '#' || n) FROM (SELECT DISTINCT node AS n FROM new_rows) d;
            RETURN NULL;
        END $$"""
    )
    for table, function in ((tables.messages, "notify_messages"), (tables.replies, "notify_replies")):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table.name}_notify ON {table.name}")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {table.name}_notify AFTER INSERT ON {table.name} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {p}_{function}()"
        )
