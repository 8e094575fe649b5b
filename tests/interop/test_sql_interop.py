"""Foreign programs on sql:// (docs/interop/sql.md): the Node.js client (pg, mysql2) on
PostgreSQL and MariaDB and the raw-driver Python client (asyncpg, sqlite3, asyncmy) on
PostgreSQL, SQLite and MariaDB, each against a real PyComms worker process, with the CloudEvents SDKs on their
side. Both directions, request/reply, bad input dead-lettered while good traffic flows,
durable subscribers and passing observers, and nothing of theirs left behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_support import BackgroundClient, Worker, run_client, with_option
from shared_services import MYSQL_URL, POSTGRES_URL
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import pycomms
from pycomms.testing import require_reachable

pytestmark = [pytest.mark.timeout(180)]

# (client language, engine): PostgreSQL and MariaDB by both clients, SQLite by Python.
CASES = [("node", "postgresql"), ("node", "mysql"), ("python", "postgresql"), ("python", "sqlite"), ("python", "mysql")]
BURST = 300


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database URL (without namespace) of the case's engine."""
    engine = request.param
    if engine == "postgresql":
        require_reachable(POSTGRES_URL, 5432)
        yield POSTGRES_URL
    elif engine == "mysql":
        require_reachable(MYSQL_URL, 3306)
        yield MYSQL_URL
    else:
        yield f"sqlite:///{tmp_path / 'interop.db'}"


def parametrized() -> Any:
    return pytest.mark.parametrize(
        ("language", "server"),
        [pytest.param(lang, eng, id=f"{lang}-{eng}") for lang, eng in CASES],
        indirect=["server"],
    )


def sqlalchemy_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    driver = {"postgresql": "postgresql+asyncpg", "mysql": "mysql+asyncmy", "sqlite": "sqlite+aiosqlite"}[scheme]
    return f"{driver}://{rest}"


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one query on the database, as an outside observer would."""

    async def query() -> list[tuple[Any, ...]]:
        engine = create_async_engine(sqlalchemy_url(url))
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in (await conn.execute(text(sql))).all()]
        finally:
            await engine.dispose()

    return asyncio.run(query())


def settled(url: str, namespace: str, timeout: float = 15.0) -> None:
    """Until the namespace's queues are empty: the worker deletes a row when its handler
    is done, and its deletes (acks) trail its handlers by a moment."""
    deadline = time.monotonic() + timeout
    while (
        left := rows(url, f"SELECT queue, msg_id FROM pycomms_{namespace}_messages")
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"rows still queued after {timeout}s: {left}"


def tables_of(url: str, namespace: str) -> list[str]:
    prefix = f"pycomms_{namespace}_"
    if url.startswith("sqlite"):
        sql = f"SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '{prefix}%'"
    elif url.startswith("mysql"):
        sql = f"SELECT table_name FROM information_schema.tables WHERE table_name LIKE '{prefix}%'"
    else:
        sql = f"SELECT tablename FROM pg_tables WHERE tablename LIKE '{prefix}%'"
    return [r[0] for r in rows(url, sql)]


def dead_letters_and_drop(url: str) -> list[pycomms.DeadLetter]:
    """The worker's dead letters, then the namespace dropped (the test leaves nothing)."""

    async def run() -> list[pycomms.DeadLetter]:
        async with pycomms.connect(url) as bus:
            letters = await bus.dead_letters("interop")
            await bus.drop_namespace()
            return letters

    return asyncio.run(run())


@parametrized()
def test_sql_interop(language: str, server: str, namespace: str, start_worker: Any) -> None:
    """Both directions against one worker (one worker start per case keeps the tests
    fast); the namespace is dropped afterwards and no table of it is left."""
    url = with_option(server, "namespace", namespace)
    try:
        worker: Worker = start_worker(url)
        try:
            foreign_to_pycomms(language, server, namespace, worker)
            pycomms_to_foreign(language, server, namespace, worker)
        finally:
            worker.stop()
    finally:  # dropped also when the test failed
        letters = {letter.reason: letter for letter in dead_letters_and_drop(url)}
    assert set(letters) == {"invalid", "malformed", "rejected"}, letters
    assert "order_id" in letters["invalid"].error
    assert "'time' must be an RFC 3339 timestamp string, got 1721400000.25" in letters["malformed"].error
    assert tables_of(server, namespace) == []


def foreign_to_pycomms(language: str, server: str, namespace: str, worker: Worker) -> None:
    """A burst of events handled exactly once, a command, a request answered with a typed
    reply and one answered with an error reply, and bad input dead-lettered with its
    reason while the good traffic flows."""
    # Independent programs at once: the bad input arrives among the good traffic.
    runs = [
        BackgroundClient(language, "sql", server, namespace, *args)
        for args in (
            ("bad",),
            ("publish", str(BURST)),
            ("send", "7", "ups"),
            ("request", "mug", "3"),
            ("request", "nope", "1"),
        )
    ]
    bad, _, _, quote, refused = (run.finish().check().lines for run in runs)
    assert bad == [{"bad": 2}]
    assert quote == [
        {"type": "interop.quote", "kind": "reply", "data": {"sku": "mug", "qty": 3, "cents": 750}, "pycommserror": None}
    ]
    assert refused == [
        {"type": "pycomms.error", "kind": "reply", "data": {"error": "no price for 'nope'"}, "pycommserror": "rejected"}
    ]
    handled = worker.wait_for("order_placed", BURST)
    assert sorted(r["data"]["order_id"] for r in handled) == list(range(BURST))
    assert len({r["id"] for r in handled}) == BURST
    shipped = worker.wait_for("ship", 1)
    assert [(r["data"], r["attempt"]) for r in shipped] == [({"order_id": 7, "carrier": "ups"}, 1)]
    # The queue is drained: still exactly once.
    settled(server, namespace)
    assert len(worker.records("order_placed")) == BURST
    assert rows(server, f"SELECT COUNT(*) FROM pycomms_{namespace}_replies") == [(0,)]


def pycomms_to_foreign(language: str, server: str, namespace: str, worker: Worker) -> None:
    """A durable subscriber of its own (it subscribes, exits, the worker publishes, it
    comes back and gets its copies) and a passing observer (registered with presence,
    gone without a trace when it leaves); neither leaves a row behind."""
    service = f"{language}-audit"
    run_client(language, "sql", server, namespace, "subscribe", service).check()
    # The subscriber is not running: the worker's notices wait in its queue.
    run_client(language, "sql", server, namespace, "announce", "5", "durable").check()
    worker.wait_for("announce", 1)
    got = run_client(language, "sql", server, namespace, "consume", service, "5").check().lines
    assert sorted(line["data"]["seq"] for line in got) == [0, 1, 2, 3, 4]
    assert {(line["type"], line["kind"], line["data"]["text"]) for line in got} == {
        ("interop.notice", "event", "durable")
    }
    run_client(language, "sql", server, namespace, "unsubscribe", service).check()
    observed = run_client(language, "sql", server, namespace, "observe", "4", "passing").check().lines
    assert sorted(line["data"]["seq"] for line in observed) == [0, 1, 2, 3]
    p = f"pycomms_{namespace}"
    assert rows(server, f"SELECT DISTINCT service FROM {p}_subscriptions") == [("interop",)]
    settled(server, namespace)
    assert rows(server, f"SELECT name FROM {p}_meta WHERE name LIKE 'observer:%'") == []
    nodes = rows(server, f"SELECT info FROM {p}_nodes")
    assert len(nodes) == 1, nodes  # the worker's own presence row only
