"""The engine of one transport and how it opens transactions on each database.

PostgreSQL and MariaDB use ordinary transactions (READ COMMITTED on MariaDB, so
``SKIP LOCKED`` claims take no gap locks). SQLite runs with the driver in autocommit
mode and every writing transaction opened with ``BEGIN IMMEDIATE``: the write lock is
taken up front, so a transaction never fails half-way with "database is locked"; the
busy timeout makes other processes wait for it, and one asyncio lock per database and
event loop makes the buses of one process queue for it without spinning in
SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ._errors import retrying
from ._options import SqlOptions
from ._url import Target

T = TypeVar("T")

_sqlite_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def create_engine(target: Target, options: SqlOptions) -> AsyncEngine:
    """An async engine for ``target``, configured for queue work."""
    # No pool_pre_ping: on PostgreSQL it costs three round trips per checkout (BEGIN,
    # a ping, ROLLBACK), more than most of our statements. A connection found dead
    # on use is invalidated by SQLAlchemy (with every older one in the pool) and the
    # transaction repeated on a fresh one (`retrying`).
    kwargs: dict[str, Any] = {}
    if target.engine == "sqlite":
        engine = create_async_engine(
            target.url,
            isolation_level="AUTOCOMMIT",
            connect_args={"timeout": options.busy_timeout},
            pool_size=min(options.pool_size, 4),
            max_overflow=0,
            **kwargs,
        )
        busy_ms = int(options.busy_timeout * 1000)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        return engine
    driver = target.url.get_driver_name()
    if driver == "asyncpg":
        kwargs["connect_args"] = {"timeout": options.connect_timeout}
    elif driver in ("asyncmy", "aiomysql"):
        kwargs["connect_args"] = {"connect_timeout": options.connect_timeout}
    if target.engine == "mysql":
        kwargs["isolation_level"] = "READ COMMITTED"
    return create_async_engine(
        target.url, pool_size=options.pool_size, max_overflow=options.pool_size, pool_recycle=3600, **kwargs
    )


class Database:
    """Transactions on one engine, the way each database wants them."""

    def __init__(self, engine: AsyncEngine, target: Target) -> None:
        self.engine = engine
        self.kind = target.engine
        self._key = target.key
        # PostgreSQL runs a lone statement as its own transaction: one round trip,
        # where BEGIN and COMMIT around it would add two.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT") if self.kind == "postgresql" else None

    def _sqlite_lock(self) -> asyncio.Lock:
        locks = _sqlite_locks.setdefault(asyncio.get_running_loop(), {})
        lock = locks.get(self._key)
        if lock is None:
            lock = locks[self._key] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits on success and rolls back on error."""
        if self.kind != "sqlite":
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._sqlite_lock(), self.engine.connect() as conn:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.exec_driver_sql("COMMIT")
            except BaseException:
                await _abandon(conn)
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: each statement sees committed data (PostgreSQL:
        autocommit; elsewhere a transaction rolled back at the end)."""
        async with (self._autocommit or self.engine).connect() as conn:
            yield conn

    async def run_read(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``async body(conn)`` on a `read` connection, repeated on transient errors
        (such as a connection that died in the pool)."""

        async def once() -> T:
            async with self.read() as conn:
                return await body(conn)

        return await retrying(once)

    async def run_write(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``async body(conn)`` in a write transaction, repeated on transient errors."""

        async def once() -> T:
            async with self.write() as conn:
                return await body(conn)

        return await retrying(once)

    async def run_statement(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Like `run_write` for a ``body`` that executes exactly one statement, which is
        atomic by itself: on PostgreSQL it runs in autocommit, without BEGIN/COMMIT."""
        if self._autocommit is None:
            return await self.run_write(body)
        autocommit = self._autocommit

        async def once() -> T:
            async with autocommit.connect() as conn:
                return await body(conn)

        return await retrying(once)


async def _abandon(conn: AsyncConnection) -> None:
    """Roll back a SQLite transaction that failed, or drop its connection.

    Not ``ROLLBACK`` as SQL: a statement interrupted by a cancellation leaves the
    connection invalidated by SQLAlchemy, and any SQL on it would raise
    ``PendingRollbackError`` in place of the original error. ``rollback()`` both ends
    the transaction of a live connection (the driver issues ROLLBACK when one is
    open) and resets an invalidated one; a connection whose rollback fails is
    invalidated, so the pool never hands out one still inside a transaction.
    """
    try:
        await conn.rollback()
    except Exception:
        await conn.invalidate()
