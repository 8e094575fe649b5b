"""The engine of one transport and how it opens transactions on each database.

PostgreSQL and MariaDB use ordinary transactions (READ COMMITTED on MariaDB, so
``SKIP LOCKED`` claims take no gap locks). SQLite runs with the driver in autocommit
mode and every writing transaction opened with ``BEGIN IMMEDIATE``: the write lock is
taken up front, so a transaction never fails half-way with "database is locked"; the
busy timeout makes other processes wait for it, and one asyncio lock per database and
event loop makes the buses of one process queue for it without spinning in
SQLite's busy handler.

Every connection to a server is opened within ``connect_timeout`` (TCP, TLS, the
server's greeting and authentication: asyncmy's own ``connect_timeout`` covers only
TCP), and the transport can cut every connection of its engine at once
(`Database.cut_connections`) when a close finds the server silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sqlite3
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from pycomms.spi import stop_tasks

from ._deadline import within
from ._errors import retrying
from ._options import SqlOptions
from ._url import Target

T = TypeVar("T")
log = logging.getLogger("pycomms.sql")

_sqlite_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def create_engine(target: Target, options: SqlOptions, *, settling: bool = False) -> AsyncEngine:
    """An async engine for ``target``, configured for queue work; with ``settling``
    (PostgreSQL only), a small autocommit pool whose sessions commit asynchronously
    (`Database.run_settle`)."""
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
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":  # `prepare_sqlite` switched it already
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        return engine
    driver = target.url.get_driver_name()
    connect_args: dict[str, Any] = {}
    if driver == "asyncpg":
        connect_args["timeout"] = options.connect_timeout
    elif driver in ("asyncmy", "aiomysql"):
        connect_args["connect_timeout"] = options.connect_timeout
    if settling:
        if driver == "asyncpg":
            connect_args["server_settings"] = {"synchronous_commit": "off"}
        else:  # psycopg: libpq's options
            connect_args["options"] = "-c synchronous_commit=off"
        kwargs["isolation_level"] = "AUTOCOMMIT"
    if connect_args:
        kwargs["connect_args"] = connect_args
    if target.engine == "mysql":
        kwargs["isolation_level"] = "READ COMMITTED"
    # Kept, and as many more at peaks. The settle pool is small (2): it adds at most 4
    # connections to the main pool's ``pool_size`` (+ as many at peaks).
    size = min(options.pool_size, _SETTLE_POOL) if settling else options.pool_size
    engine = create_async_engine(
        target.url,
        pool_size=size,
        max_overflow=size,
        pool_recycle=3600,
        pool_timeout=options.deadline(target.engine),
        **kwargs,
    )
    pending: set[asyncio.Task[Any]] = set()
    _connecting[engine.sync_engine] = pending
    bounded = _bounded_connect(_driver_connect(driver), options.connect_timeout, pending)

    @event.listens_for(engine.sync_engine, "do_connect")
    def _within_connect_timeout(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["async_creator_fn"] = bounded

    return engine


def _driver_connect(driver: str) -> Callable[..., Awaitable[Any]]:
    """The driver's own connect function (what SQLAlchemy would call)."""
    if driver in ("psycopg", "psycopg_async"):
        return importlib.import_module("psycopg").AsyncConnection.connect  # type: ignore[no-any-return]
    return importlib.import_module(driver).connect  # type: ignore[no-any-return]


# Connections kept open by a settling engine: one claimer and one ack flusher per
# receiver at a time, renewals now and then.
_SETTLE_POOL = 2

# Connections being opened, per engine (see `_bounded_connect`).
_connecting: weakref.WeakKeyDictionary[Any, set[asyncio.Task[Any]]] = weakref.WeakKeyDictionary()


def _bounded_connect(
    connect: Callable[..., Awaitable[Any]], seconds: float, pending: set[asyncio.Task[Any]]
) -> Callable[..., Awaitable[Any]]:
    """``connect``, failing with `TimeoutError` after ``seconds`` whatever step it is at.

    The connect runs in a task of its own that a cancelled caller does not cancel: a
    cancellation in the middle of asyncpg's TLS probe (``sslmode=prefer``) leaves a
    failed future nobody awaits. A connection made after its caller left is closed at
    once; ``pending`` holds the connects under way, for `Database.dispose` to await."""

    async def timed(*args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(seconds):
                return await connect(*args, **kwargs)
        except TimeoutError:
            raise TimeoutError(f"no connection within {seconds:g}s (connect_timeout)") from None

    async def bounded(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.ensure_future(timed(*args, **kwargs))
        pending.add(task)
        task.add_done_callback(pending.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_close_unwanted)
            raise

    return bounded


def _close_unwanted(task: asyncio.Task[Any]) -> None:
    """Close a connection whose caller was cancelled while it was being made."""
    if task.cancelled() or task.exception() is not None:
        return
    connection = task.result()
    with contextlib.suppress(Exception):
        (connection.terminate if hasattr(connection, "terminate") else connection.close)()


async def prepare_sqlite(database: str, busy_timeout: float) -> None:
    """Create the SQLite file if needed and switch it to WAL, before the pool opens
    connections to it.

    Changing the journal mode needs an exclusive lock, and SQLite does not run the
    busy handler for it (waiting while holding a shared lock could deadlock): when
    processes open a brand-new file together, all but one get "database is locked" at
    once. Here that is retried until ``busy_timeout``. The mode is stored in the file,
    so this happens once per database.
    """
    import aiosqlite

    loop = asyncio.get_running_loop()
    give_up = loop.time() + busy_timeout
    delay = 0.005
    async with aiosqlite.connect(database, timeout=busy_timeout) as conn:
        while True:
            try:
                async with conn.execute("PRAGMA journal_mode=WAL") as cursor:
                    await cursor.fetchone()
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or loop.time() + delay > give_up:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


class Database:
    """Transactions on one engine, the way each database wants them."""

    def __init__(self, engine: AsyncEngine, target: Target, settling: AsyncEngine | None = None) -> None:
        self.engine = engine
        self.kind = target.engine
        self._key = target.key
        # PostgreSQL runs a lone statement as its own transaction: one round trip,
        # where BEGIN and COMMIT around it would add two.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT") if self.kind == "postgresql" else None
        self._settling = settling
        self._connections: dict[int, Any] = {}
        for each in self._engines:
            if self.kind != "sqlite":
                event.listen(each.sync_engine, "connect", self._opened)
                event.listen(each.sync_engine, "close", self._closed)
                event.listen(each.sync_engine, "close_detached", self._closed_detached)
            if self.kind == "postgresql":
                event.listen(each.sync_engine, "invalidate", _abort_invalidated)

    @property
    def _engines(self) -> list[AsyncEngine]:
        return [self.engine] if self._settling is None else [self.engine, self._settling]

    def _opened(self, dbapi_connection: Any, _record: Any) -> None:
        self._connections[id(dbapi_connection)] = dbapi_connection

    def _closed(self, dbapi_connection: Any, _record: Any) -> None:
        self._connections.pop(id(dbapi_connection), None)

    def _closed_detached(self, dbapi_connection: Any) -> None:
        self._connections.pop(id(dbapi_connection), None)

    async def dispose(self, seconds: float) -> None:
        """Close the pool's idle connections (waiting at most ``seconds``, also for
        connections still being opened), then cut every connection left: those a
        silent server keeps from closing and those held by abandoned calls."""
        pending = {task for each in self._engines for task in _connecting.get(each.sync_engine, ())}
        if pending:
            await asyncio.wait(pending, timeout=seconds)
            await stop_tasks(pending, recancel_after=0.1, give_up_after=seconds)  # a silent server
        try:
            await within(seconds, _dispose_all(self._engines))
        except Exception as exc:
            log.debug("engine dispose failed: %s", "timed out" if isinstance(exc, TimeoutError) else exc)
        cut = self.cut_connections()
        if cut:
            log.debug("cut %d connection(s) left after dispose", cut)

    def cut_connections(self) -> int:
        """Close every connection of the engine at once, without a word to the server
        (for a server that stopped answering); statements waiting on them fail. How many."""
        cut = 0
        for connection in list(self._connections.values()):
            if _is_closed(connection.driver_connection):
                continue  # closed, or closing politely: an abort would fail its close
            try:
                connection.terminate()  # outside SQLAlchemy's greenlet: a synchronous abort
                cut += 1
            except Exception:
                pass
        self._connections.clear()
        return cut

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

    async def run_settle(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`run_statement` for a consumer's claim, ack, retry, renewal or release.

        On PostgreSQL (unless ``durable_settles``) on sessions that commit
        asynchronously: the statement returns without waiting for its WAL to reach
        disk, and a database crash may forget the last fraction of a second of them,
        so a message is delivered again, never lost (publishes stay synchronous)."""
        settling = self._settling
        if settling is None:
            return await self.run_statement(body)

        async def once() -> T:
            async with settling.connect() as conn:
                return await body(conn)

        return await retrying(once)


async def _dispose_all(engines: list[AsyncEngine]) -> None:
    for engine in engines:
        await engine.dispose()


def _abort_invalidated(dbapi_connection: Any, _record: Any, _exception: BaseException | None) -> None:
    """An invalidated PostgreSQL connection (a call cut at its deadline, a lost link) is
    aborted at once. SQLAlchemy would close it politely inside ``asyncio.shield`` with a
    2 s timeout; a cancellation repeated meanwhile (`pycomms.spi.stop_tasks`) leaves
    that shielded close running alone, and on a silent server its ``TimeoutError`` is
    then never retrieved. An aborted connection's polite close returns at once."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and not _is_closed(driver):
        with contextlib.suppress(Exception):
            driver.terminate()


def _is_closed(driver_connection: Any) -> bool:
    """Whether an asyncpg (``is_closed()``), asyncmy (``connected``) or aiomysql
    (``closed``) connection is closed or closing."""
    is_closed = getattr(driver_connection, "is_closed", None)
    if callable(is_closed):
        return bool(is_closed())
    connected = getattr(driver_connection, "connected", None)
    if isinstance(connected, bool):
        return not connected
    return bool(getattr(driver_connection, "closed", False))


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
