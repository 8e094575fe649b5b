"""`SqlTransport`: the bus stored in tables of PostgreSQL, SQLite or MariaDB/MySQL."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pycomms import ConfigError, ConnectError, OperationError, PublishError, PyCommsError
from pycomms.spi import BackendConfig, DeadLetter, Envelope, NodeInfo, ReplySink, Subscription, stop_tasks

from . import _observers as observers
from . import _queries as q
from ._batching import Coalescer
from ._db import Database, create_engine, prepare_sqlite
from ._deadline import ABANDON_AFTER, CLOSE_BUDGET, Deadlines, within
from ._drop import drop_tables
from ._errors import describe, map_errors
from ._local import LocalGroup, local_group
from ._notify import Listener
from ._options import SqlOptions, parse_options
from ._presence import Presence, live_nodes
from ._receiver import SqlReceiver
from ._schema import SCHEMA_LOCK_WAIT, Tables, ensure_schema, make_tables
from ._schemes import CAPABILITIES
from ._url import location, open_failure, parse_target

log = logging.getLogger("pycomms.sql")

_REQUEST_HOT = 60.0


class SqlTransport:
    """The `pycomms.spi.Transport` of ``postgresql://``, ``sqlite://``, ``mysql://``."""

    capabilities = CAPABILITIES

    def __init__(self, config: BackendConfig) -> None:
        self.options: SqlOptions = parse_options(config.options)
        self.target = parse_target(config.url)
        _require_driver(self.target.url.get_driver_name(), self.target.engine)
        self.tables: Tables = make_tables(config.namespace)
        self.deadlines = Deadlines(
            config.scheme.partition("+")[0],
            location(self.target),
            self.options.connect_timeout,
            self.options.deadline(self.target.engine),
        )
        self._config = config
        self._namespace = config.namespace
        self._db: Database | None = None
        self._node: NodeInfo | None = None
        self._replies: ReplySink | None = None
        self._group: LocalGroup | None = None
        self._presence: Presence | None = None
        self._listener: Listener | None = None
        self._receivers: list[SqlReceiver] = []
        self._reply_task: asyncio.Task[None] | None = None
        self._reply_wake = asyncio.Event()
        self._hot_until = 0.0
        self._closed = False
        batch = self.options.batch_size
        if self.target.engine == "sqlite":
            batch = min(batch, q.SQLITE_MAX_ROWS)
        self._batch = batch
        self._writes: Coalescer[Envelope] = Coalescer(
            self._flush, max_batch=batch, parallel=max(1, min(4, self.options.pool_size // 2))
        )

    @property
    def db(self) -> Database:
        if self._db is None:
            raise PyCommsError("the SQL transport is not open")
        return self._db

    @property
    def notified(self) -> bool:
        """Whether LISTEN/NOTIFY wakes this transport's consumers."""
        return self.target.engine == "postgresql" and self.options.listen

    @property
    def idle_poll(self) -> float:
        return self.options.idle_poll(self.notified)

    # lifecycle -------------------------------------------------------------------------

    async def open(self, node: NodeInfo, replies: ReplySink) -> None:
        self._node, self._replies = node, replies
        d = self.deadlines
        try:
            if self.target.engine == "sqlite":
                busy = self.options.busy_timeout  # other processes may hold the new file's lock meanwhile
                await self._connect(prepare_sqlite(self.target.url.database or "", busy), busy, "busy_timeout")
            engine = create_engine(self.target, self.options)
            settling = None
            if self.target.engine == "postgresql" and not self.options.durable_settles:
                settling = create_engine(self.target, self.options, settling=True)
            self._db = db = Database(engine, self.target, settling)
            await self._connect(self._first_connection())
            schema_wait = SCHEMA_LOCK_WAIT + d.operation_timeout
            await d.run("creating the tables on", ConnectError, ensure_schema(db, self.tables), schema_wait)
            self._presence = Presence(db, self.tables, node, self.options.heartbeat, d)
            await d.run("joining presence on", ConnectError, self._presence.join())
            if self.notified:
                self._listener = Listener(engine, self.tables.channel, self._on_notify, self._wake_all)
                await self._listener.start()
        except BaseException:
            await self._shutdown(asyncio.get_running_loop().time() + CLOSE_BUDGET)
            raise
        self._group = local_group(self.target.key, self._namespace)
        self._group.reply_sinks[node.id] = replies
        self._reply_task = asyncio.create_task(self._collect_replies(), name=f"pycomms-sql:{node.id}:replies")
        log.debug(
            "sql transport open: %s namespace=%s tables=%s_*",
            self._config.redacted_url,
            self._namespace,
            self.tables.prefix,
        )

    async def _first_connection(self) -> None:
        async with self.db.engine.connect():
            self._check_version()  # before any DDL on a server we cannot use

    async def _connect(
        self, step: Coroutine[Any, Any, None], seconds: float | None = None, option: str = "connect_timeout"
    ) -> None:
        """Run a connecting ``step`` within ``seconds`` (connect_timeout); any failure
        is one `ConnectError` line (the driver's words, no secret, no chained traceback)."""
        d = self.deadlines
        limit = d.connect_timeout if seconds is None else seconds
        try:
            await within(limit + ABANDON_AFTER, step)
        except ConnectError:
            raise
        except TimeoutError:
            raise ConnectError(d.expired("connect to", limit, option)) from None
        except Exception as exc:
            explained = open_failure(self.target, exc)
            raise ConnectError(explained or d.failed("connect to", exc)) from None

    async def publish_in(self, connection: object, envelopes: Sequence[Envelope]) -> None:
        """The outbox: insert ``envelopes`` with the caller's connection, inside its open
        transaction; consumers claim by availability, so a late commit is never skipped."""
        if not isinstance(connection, AsyncConnection):
            raise TypeError(f"connection= takes a SQLAlchemy AsyncConnection, got {type(connection).__name__}")
        dialect = connection.dialect.name
        expected = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mariadb": "mysql"}.get(dialect)
        if expected != self.target.engine:
            raise TypeError(f"connection= is a {dialect} connection; this bus is on {self.target.engine}")
        with map_errors(
            PublishError,
            f"{self.deadlines.backend}: publishing {len(envelopes)} message(s) in the caller's transaction",
        ):
            await q.insert_messages(connection, self.target.engine, self.tables, envelopes, time.time())

    def _check_version(self) -> None:
        dialect = self.db.engine.dialect
        version = dialect.server_version_info or ()
        if self.db.kind != "mysql":
            return
        is_mariadb = bool(getattr(dialect, "is_mariadb", False))
        needed = (10, 6) if is_mariadb else (8, 0, 1)
        if tuple(version[: len(needed)]) < needed:
            name = "MariaDB" if is_mariadb else "MySQL"
            raise ConnectError(
                f"{name} {'.'.join(map(str, version))} lacks FOR UPDATE SKIP LOCKED; "
                f"pycomms-sql needs {name} >= {'.'.join(map(str, needed))}"
            )

    async def close(self) -> None:
        """Release leases, flush, leave presence: politely within the close budget
        (`_deadline.CLOSE_BUDGET`, less when the server stopped answering), then the
        connections are cut, so a silent server cannot hold the close."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(receiver.close() for receiver in list(self._receivers)), return_exceptions=True)
        until = loop.time() + self.deadlines.close_budget
        with contextlib.suppress(Exception):
            await self._writes.drain(max(0.0, until - loop.time()))
        if self._group is not None and self._node is not None:
            self._group.reply_sinks.pop(self._node.id, None)
        await self._shutdown(until)

    async def _stop_background(self, until: float) -> None:
        """Stop the reply poll, the LISTEN connection and the heartbeat (by ``until``)."""
        loop = asyncio.get_running_loop()
        listener, self._listener = self._listener, None
        tasks = [self._reply_task, self._presence.task if self._presence is not None else None]
        self._reply_task = None
        left = max(0.1, until - loop.time())
        silent = self.deadlines.lapsed
        listening = None if listener is None else asyncio.ensure_future(listener.stop(left, silent=silent))
        stuck = await stop_tasks(tasks, recancel_after=0.1, give_up_after=left)
        if stuck or (listening is not None and not await listening):
            log.warning("background tasks did not stop in time; cutting their connections")

    async def _shutdown(self, until: float) -> None:
        """Stop background work, leave presence, dispose of the engine. Never raises.

        The engine is disposed even if this is cancelled, so no connection outlives
        the transport; leaving presence waits at most until ``until`` (a node that
        could not delete its row drops out of `nodes()` when it expires)."""
        loop = asyncio.get_running_loop()
        try:
            await self._stop_background(until)
            if self._presence is not None:
                presence, self._presence = self._presence, None
                try:
                    await self.deadlines.within(max(0.1, until - loop.time()), presence.leave())
                except Exception as exc:
                    node = self._node and self._node.id
                    log.warning(
                        "could not remove node %s from presence (it expires by itself): %s",
                        node,
                        "timed out" if isinstance(exc, TimeoutError) else describe(exc),
                    )
        finally:
            if self._db is not None:
                await self._dispose(self._db)

    async def _dispose(self, db: Database) -> None:
        """Close the pool. When the last call passed its deadline, cut every
        connection first: asyncpg's polite close waits for the server to confirm the
        cancellation of every statement it cancelled, which a silent server never does."""
        if self.deadlines.lapsed:
            log.debug("%s is not answering: cut %d connection(s)", self.deadlines.where, db.cut_connections())
        await db.dispose(0.2 if self.deadlines.lapsed else ABANDON_AFTER)

    # publishing ------------------------------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        for env in envelopes:
            if env.kind not in ("event", "command", "request"):
                raise PublishError(f"publish() routes events, commands and requests; got kind {env.kind!r}")
            if env.kind == "request" and self._node is not None and env.reply_to == self._node.id:
                self._hot_until = time.monotonic() + _REQUEST_HOT
                self._reply_wake.set()
        if envelopes:
            await self._writes.submit(envelopes)

    async def send_reply(self, envelope: Envelope) -> None:
        group = self._group
        sink = group.reply_sinks.get(envelope.reply_to or "") if group is not None else None
        if sink is not None:
            sink(envelope.encode())  # a node of this process: hand it over directly
            return
        await self._writes.submit([envelope])  # written with the loop turn's messages

    async def _flush(self, envelopes: list[Envelope]) -> None:
        db, tables = self.db, self.tables
        messages = [env for env in envelopes if env.kind != "reply"]
        replies = [env for env in envelopes if env.kind == "reply"]

        async def body(conn: AsyncConnection) -> None:
            now = time.time()
            for start in range(0, len(messages), self._batch):
                await q.insert_messages(conn, db.kind, tables, messages[start : start + self._batch], now)
            await q.insert_replies(conn, tables, replies, now)

        statements = -(-len(messages) // self._batch) + (1 if replies else 0)
        work = db.run_statement(body) if statements == 1 else db.run_write(body)
        await self.deadlines.run(f"{_verb(envelopes)} to", PublishError, work)
        if self._group is not None and messages:
            self._group.wake_types({env.type for env in messages})

    # consuming -------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._node.id if self._node is not None else ""

    async def subscribe(self, subscription: Subscription) -> SqlReceiver:
        db, tables = self.db, self.tables

        node_id = self.node_id

        async def body(conn: AsyncConnection) -> list[str]:
            if subscription.ephemeral:
                await observers.register(conn, tables, subscription.service, node_id)
            routed = await q.subscribe(
                conn, db.kind, tables, subscription.service, subscription.events, subscription.commands
            )
            await q.adopt(conn, tables, subscription.service, routed)
            return routed

        routed = await self.deadlines.run(f"subscribing {subscription.service} on", OperationError, db.run_write(body))
        others = sorted(subscription.commands - set(routed))
        if others:
            log.warning(
                "service %s: command type(s) %s are handled by another service that subscribed first; "
                "this service will not receive them",
                subscription.service,
                ", ".join(others),
            )
        receiver = SqlReceiver(self, subscription, routed)
        self._receivers.append(receiver)
        if self._group is not None:
            self._group.receivers.add(receiver)
        return receiver

    def forget_receiver(self, receiver: SqlReceiver) -> None:
        if receiver in self._receivers:
            self._receivers.remove(receiver)
        if self._group is not None:
            self._group.receivers.discard(receiver)

    def wake_service(self, service: str) -> None:
        """Wake this process's receivers of ``service`` (released messages wait)."""
        if self._group is not None:
            self._group.wake_service(service)

    def _on_notify(self, payload: str) -> None:
        if payload.startswith("#"):
            if self._node is not None and payload[1:] == self._node.id:
                self._reply_wake.set()
            return
        for receiver in self._receivers:
            if receiver.service == payload:
                receiver.wake()

    def _wake_all(self) -> None:
        self._reply_wake.set()
        for receiver in self._receivers:
            receiver.wake()

    # replies ---------------------------------------------------------------------------

    async def _collect_replies(self) -> None:
        """Fetch replies stored for this node: promptly while requests are out,
        rarely otherwise (PostgreSQL: when NOTIFYed)."""
        node_info, sink = self._node, self._replies
        if node_info is None or sink is None:
            return
        node, db, tables = node_info.id, self.db, self.tables
        opts = self.options
        delay = opts.poll_min
        while True:
            self._reply_wake.clear()
            try:
                replies = await self.deadlines.within(
                    self.deadlines.operation_timeout, self._take_replies(db, tables, node)
                )
                if replies:
                    for data in replies:
                        sink(data)
                    delay = opts.poll_min
                    continue
            except Exception as exc:
                why = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
                log.warning("fetching replies for node %s from %s failed: %s", node, self.deadlines.where, why)
                delay = self.idle_poll
            hot = time.monotonic() < self._hot_until and not self.notified
            limit = min(self.idle_poll, 0.05) if hot else self.idle_poll
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, limit)):
                    await self._reply_wake.wait()
            delay = min(delay * 2, limit)

    @staticmethod
    async def _take_replies(db: Database, tables: Tables, node: str) -> list[bytes]:
        async with db.read() as conn:
            if not await q.has_replies(conn, tables, node):
                return []

        async def body(conn: AsyncConnection) -> list[bytes]:
            return await q.take_replies(conn, tables, node)

        return await db.run_write(body)

    async def backlog(self, service: str) -> int | None:
        """Messages of ``service`` ready to be claimed (neither leased to a handler nor
        waiting for a retry's delay), counted over the claim index's range for the
        service (the count grows with the backlog); ``None`` for a service this bus does
        not serve, or once the bus is closed."""
        if self._closed or self._db is None or not any(r.service == service for r in self._receivers):
            return None
        tables = self.tables

        async def body(conn: AsyncConnection) -> int:
            return await q.count_ready(conn, tables, service, time.time())

        return await self.deadlines.run(f"counting the backlog of {service} on", OperationError, self.db.run_read(body))

    # presence, dead letters, the namespace ----------------------------------------------

    async def nodes(self) -> list[NodeInfo]:
        return await self.deadlines.run("listing nodes on", OperationError, live_nodes(self.db, self.tables))

    async def dead_letters(self, service: str, limit: int) -> list[DeadLetter]:
        tables = self.tables

        async def body(conn: AsyncConnection) -> list[bytes]:
            return await q.list_dead_letters(conn, tables, service, limit)

        rows = await self.deadlines.run(
            f"reading dead letters of {service} from", OperationError, self.db.run_read(body)
        )
        return [DeadLetter.from_json(row) for row in rows]

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        tables = self.tables

        async def body(conn: AsyncConnection) -> int:
            letters = [DeadLetter.from_json(raw) for raw in await q.take_dead_letters(conn, tables, service, ids)]
            await q.requeue(conn, tables, service, [(letter.id, letter.envelope) for letter in letters], time.time())
            return len(letters)

        count = await self.deadlines.run(
            f"replaying dead letters of {service} on", OperationError, self.db.run_write(body)
        )
        if count:
            self.wake_service(service)
        return count

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        tables = self.tables

        async def body(conn: AsyncConnection) -> int:
            return len(await q.take_dead_letters(conn, tables, service, ids))

        return await self.deadlines.run(
            f"purging dead letters of {service} on", OperationError, self.db.run_write(body)
        )

    async def drop_namespace(self) -> int:
        """Drop the namespace's tables (its rows, presence and observers with them)."""
        d = self.deadlines
        await self._stop_background(asyncio.get_running_loop().time() + CLOSE_BUDGET)
        self._presence = None  # its row goes with the table
        work = drop_tables(self.db, self.tables, lock_wait=d.operation_timeout)
        removed = await d.run(f"dropping namespace {self._namespace!r} on", OperationError, work)
        log.info("dropped namespace %s on %s: %d table(s) and function(s)", self._namespace, d.where, removed)
        return removed


def _verb(envelopes: Sequence[Envelope]) -> str:
    """What the caller did, for errors: publish (events), send (commands), request."""
    kinds = {env.kind for env in envelopes}
    verbs = [
        verb for kind, verb in (("event", "publish"), ("command", "send"), ("request", "request")) if kind in kinds
    ]
    return "/".join(verbs) or "reply"


_EXTRAS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql"}


def _require_driver(driver: str, engine: str) -> None:
    """Fail at connect() with the install command when the async driver is missing."""
    if importlib.util.find_spec(driver) is None:
        raise ConfigError(
            f"the {driver} driver for {engine} is not installed; "
            f"install it with: pip install 'pycomms-sql[{_EXTRAS[engine]}]' (or pycomms-sql[all])"
        )
