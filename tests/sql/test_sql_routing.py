"""Commands sent before any handler subscribed are kept, and SQLite's write lock held
by someone else delays the bus instead of failing it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

import pycomms
from pycomms import Command, Context, Service
from pycomms.testing import Recorder, run_strict


class Early(Command, name="sqltest.early"):
    n: int


def _service(rec: Recorder) -> Service:
    svc = Service("late-starter")

    @svc.on
    async def handle(cmd: Early, ctx: Context) -> None:
        rec.add((cmd.n, ctx.attempt))

    return svc


def test_commands_sent_before_any_handler_are_kept(url: str) -> None:
    async def main() -> None:
        rec = Recorder()
        async with pycomms.connect(url) as pub:
            await pub.send(*(Early(n=n) for n in range(5)))
            async with pycomms.connect(url, services=[_service(rec)]):
                await pub.send(Early(n=5))
                await rec.wait(6, 30)
        rec.assert_exactly_once([(n, 1) for n in range(6)])

    run_strict(main, 60)


@pytest.mark.parametrize("engine_url", ["sqlite"], indirect=True)
def test_sqlite_lock_held_elsewhere_delays_but_never_fails(url: str) -> None:
    path = url.split("?", 1)[0].removeprefix("sqlite:///")
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(30)
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def main() -> None:
        rec = Recorder()
        async with pycomms.connect(url, services=[_service(rec)]) as bus:
            holder = threading.Thread(target=hold_the_write_lock)
            holder.start()
            try:
                await asyncio.to_thread(locked.wait, 10)
                sending = asyncio.create_task(bus.send(*(Early(n=n) for n in range(3))))
                await asyncio.sleep(1.0)  # the lock is held this long on purpose
                assert not sending.done(), "a write went through while another process held the lock"
                release.set()
                await sending
                await rec.wait(3, 30)
            finally:
                release.set()
                await asyncio.to_thread(holder.join, 30)
        rec.assert_exactly_once([(n, 1) for n in range(3)])

    run_strict(main, 60)
