"""Cancellation: close() ends even when a database driver swallows the cancellation of
a background task, and a cancelled write leaves a usable pool and reports the
cancellation, not an error of its own.

On Python < 3.12, ``asyncio.wait_for`` returns the result instead of raising when a
cancellation arrives in the same loop iteration as that result (CPython gh-86296);
asyncmy wraps its connect in it. A background loop cancelled while it opened a pool
connection went on polling, and close() waited for it forever (the flake of
``test_concurrent_first_starts_create_the_schema_once[mariadb]``). The tests make the
loss certain by swallowing one cancellation on purpose.

A SQLite write cancelled mid-statement used to answer with SQLAlchemy's
``PendingRollbackError`` (its ROLLBACK went to a connection SQLAlchemy had already
invalidated), which background loops took for a database error and outlived close().
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

import pycomms
from pycomms.testing import run_strict
from pycomms_sql import _queries
from pycomms_sql._db import Database, create_engine
from pycomms_sql._options import parse_options
from pycomms_sql._tasks import stop_task
from pycomms_sql._url import parse_target

# A statement that runs long enough to be cancelled while SQLite executes it.
_SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c"


def _swallowing_once(
    real: Callable[..., Coroutine[Any, Any, Any]], entered: asyncio.Event
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``real``, except that its first call waits until cancelled, swallows the
    cancellation (as ``wait_for`` does when its result is ready at that moment) and
    carries on."""
    calls = 0

    async def wrapper(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass
        return await real(*args)

    return wrapper


def test_close_ends_when_the_cancellation_of_the_reply_poll_is_lost(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        entered = asyncio.Event()
        monkeypatch.setattr(_queries, "has_replies", _swallowing_once(_queries.has_replies, entered))
        bus = await pycomms.connect(url)
        await entered.wait()  # the reply poll is in the database when close() cancels it
        await bus.close()

    run_strict(main, 60)


def test_stop_task_cancels_again_a_task_that_swallowed_the_first_cancellation() -> None:
    async def main() -> None:
        entered = asyncio.Event()
        swallowed = 0

        async def loop() -> None:
            nonlocal swallowed
            while True:
                try:
                    entered.set()
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    if swallowed:
                        raise
                    swallowed += 1

        task = asyncio.create_task(loop())
        await entered.wait()
        await stop_task(task)
        assert task.cancelled()
        assert swallowed == 1

    run_strict(main, 30)


def test_a_sqlite_write_cancelled_mid_statement_raises_cancelled_and_leaves_the_pool_usable(tmp_path: Path) -> None:
    async def main() -> None:
        target = parse_target(f"sqlite:///{tmp_path / 'bus.db'}")
        db = Database(create_engine(target, parse_options({})), target)
        started = asyncio.Event()

        async def slow(conn: AsyncConnection) -> None:
            started.set()
            await conn.exec_driver_sql(_SLOW)

        try:
            write = asyncio.create_task(db.run_write(slow))
            await started.wait()
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write

            async def fast(conn: AsyncConnection) -> int:
                return int((await conn.exec_driver_sql("SELECT 1")).scalar_one())

            assert await db.run_write(fast) == 1  # the write lock and the pool are free again
        finally:
            await db.engine.dispose()

    run_strict(main, 60)
