"""Dropping a namespace removes every table, index, trigger and function of it, with
its messages, dead letters, presence and observers; nothing of it is left in the
database's catalog, other namespaces are untouched, and the bus closes cleanly."""

from __future__ import annotations

import pytest
from sql_helpers import sqlalchemy_url, with_options
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import pycomms
from pycomms import Command, Event, Service
from pycomms.testing import eventually, run_strict
from pycomms_sql._schema import make_tables


class Chore(Command, name="sqldrop.chore"):
    n: int


class Unhandled(Command, name="sqldrop.unhandled"):
    n: int


class Noted(Event, name="sqldrop.noted"):
    n: int


_CATALOG = {
    "postgresql": "SELECT relname FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace "
    "WHERE nspname = current_schema() UNION ALL SELECT proname FROM pg_proc "
    "UNION ALL SELECT tgname FROM pg_trigger",
    "mysql": "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
    "UNION ALL SELECT index_name FROM information_schema.statistics WHERE table_schema = DATABASE() "
    "UNION ALL SELECT routine_name FROM information_schema.routines WHERE routine_schema = DATABASE()",
    "sqlite": "SELECT name FROM sqlite_master",
}


async def catalog(url: str, namespace: str) -> list[str]:
    """Every catalog object (table, index, trigger, function) named for ``namespace``."""
    engine = create_async_engine(sqlalchemy_url(url))
    prefix = make_tables(namespace).prefix + "_"
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(_CATALOG[engine.dialect.name]))).all()
    finally:
        await engine.dispose()
    return sorted(str(row[0]) for row in rows if str(row[0]).startswith(prefix))


def test_drop_namespace_leaves_nothing_of_it(engine_url: str, url: str, namespace: str) -> None:
    async def main() -> None:
        svc = Service("droppers")

        @svc.on
        async def chore(job: Chore) -> None:
            if job.n % 2:
                raise pycomms.Reject("odd")

        @svc.on
        async def noted(event: Noted) -> None:
            pass

        tail = Service("tail", ephemeral=True)

        @tail.on
        async def watch(event: Noted) -> None:
            pass

        neighbour = with_options(engine_url, namespace=namespace + "n")
        async with pycomms.connect(neighbour) as other:
            await other.send(Unhandled(n=1))
        async with pycomms.connect(url, services=[svc]) as bus:
            await bus.send(*(Chore(n=n) for n in range(6)))
            await bus.publish(Noted(n=1))
            await bus.send(Unhandled(n=1))  # kept for a handler that never comes

            async def three_letters() -> bool:
                return len(await bus.dead_letters("droppers")) == 3

            await eventually(three_letters, 20, "three dead letters")
        watcher = await pycomms.connect(url, services=[tail])  # an observer and a node present
        before = await catalog(url, namespace)
        assert len(before) >= 7, before  # the seven tables, their indexes, triggers, functions

        bus = await pycomms.connect(url)
        with pytest.raises(pycomms.NamespaceInUse, match="in use by 1 node"):
            await bus.drop_namespace()
        await watcher.close()
        removed = await bus.drop_namespace()
        assert removed == 7 + (2 if engine_url.startswith("postgresql") else 0)  # tables (+ NOTIFY functions)
        assert await catalog(url, namespace) == []
        await bus.close()  # dropped closes the bus; closing again is harmless
        assert await catalog(neighbour, namespace + "n") != [], "another namespace was touched"

        bus = await pycomms.connect(neighbour)
        assert await bus.drop_namespace() >= 7
        assert await catalog(neighbour, namespace + "n") == []

    run_strict(main, 90)
