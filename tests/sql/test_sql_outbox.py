"""The outbox: `publish_in` / `send_in` write inside the caller's transaction.

Four transactions overlap, commit in reverse order, and one more rolls back: exactly
the committed messages arrive, including those whose rows got lower ids but committed
after a consumer had already taken a higher id.
"""

from __future__ import annotations

import pytest
from sql_helpers import sqlalchemy_url
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import pycomms
import pycomms_sql
from pycomms import Command, Event, Service
from pycomms.testing import Recorder, run_strict


class Placed(Event, name="sqltest.placed"):
    n: int


class Ship(Command, name="sqltest.ship"):
    n: int


def _recorder_service(rec: Recorder) -> Service:
    svc = Service("orders")

    @svc.on
    async def placed(event: Placed) -> None:
        rec.add(event.n)

    @svc.on
    async def ship(command: Ship) -> None:
        rec.add(100 + command.n)

    return svc


@pytest.mark.parametrize("engine_url", ["postgresql", "mariadb"], indirect=True)
def test_four_overlapping_transactions_commit_in_reverse_order(url: str) -> None:
    async def main() -> None:
        rec = Recorder()
        user_engine = create_async_engine(sqlalchemy_url(url), pool_size=6)
        try:
            async with pycomms.connect(url, services=[_recorder_service(rec)]) as bus:
                conns: list[AsyncConnection] = []
                for _ in range(5):
                    conn = await user_engine.connect()
                    await conn.begin()
                    conns.append(conn)
                # Rows get increasing ids in transaction order 0..4 ...
                for n, conn in enumerate(conns):
                    await conn.execute(text("SELECT 1"))
                    await bus.publish(Placed(n=n), connection=conn)
                # ... transaction 4 rolls back, 3, 2, 1 commit, in that order, each
                # delivered before the next (lower-id) one commits.
                await conns[4].rollback()
                for n in (3, 2, 1):
                    await conns[n].commit()
                    await rec.wait(4 - n, 20)
                    assert rec.items[-1] == n
                await bus.send(Ship(n=0), connection=conns[0])
                await conns[0].rollback()
                for conn in conns:
                    await conn.close()
                # A marker published after everything and claimed after any older row:
                # anything stray would be handled by the time close() has drained.
                await bus.publish(Placed(n=99))
                await rec.wait(4, 20)
            rec.assert_exactly_once([1, 2, 3, 99])
        finally:
            await user_engine.dispose()

    run_strict(main, 90)


@pytest.mark.parametrize("engine_url", ["sqlite"], indirect=True)
def test_sqlite_commit_delivers_and_rollback_does_not(url: str) -> None:
    """SQLite has one writer at a time: its transactions cannot overlap, so this is
    the sequential form of the test above."""

    async def main() -> None:
        rec = Recorder()
        user_engine = create_async_engine(sqlalchemy_url(url))
        try:
            async with pycomms.connect(url, services=[_recorder_service(rec)]) as bus:
                async with user_engine.connect() as conn:
                    await conn.begin()
                    await bus.publish(Placed(n=1), connection=conn)
                    await bus.send(Ship(n=1), connection=conn)
                    await conn.rollback()
                    await conn.begin()
                    await bus.publish(Placed(n=2), connection=conn)
                    await bus.send(Ship(n=2), connection=conn)
                    await conn.commit()
                await rec.wait(2, 20)
                await bus.publish(Placed(n=99))
                await rec.wait(3, 20)
            rec.assert_exactly_once([2, 102, 99])
        finally:
            await user_engine.dispose()

    run_strict(main, 60)


def test_connection_is_refused_by_a_bus_that_cannot_use_it() -> None:
    async def main() -> None:
        async with pycomms.connect("memory://outbox") as bus:
            with pytest.raises(TypeError, match="Event"):
                await bus.publish(Ship(n=1), connection=object())  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="SQL backend"):
                await bus.publish(Placed(n=1), connection=object())
            with pytest.raises(TypeError, match="SQL backend"):
                await pycomms_sql.publish_in(object(), bus, Placed(n=1))  # type: ignore[arg-type]

    run_strict(main, 20)
