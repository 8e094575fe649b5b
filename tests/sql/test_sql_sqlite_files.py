"""SQLite files: several processes opening one brand-new file together all wait for
each other (bounded by busy_timeout) and none fails; a path that cannot be opened is
explained (three versus four slashes, the resolved path).

Switching a new file to WAL needs an exclusive lock, and SQLite does not run its busy
handler while another connection holds the write lock of a file not yet in WAL mode
(waiting could deadlock): processes racing on a fresh file, one of them switching it,
used to fail with "database is locked" at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import time
import traceback
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

import pycomms
from pycomms import Event, Service
from pycomms.testing import run_strict

PROCESSES = 4
ROUNDS = 6


class Hello(Event, name="sqlfiles.hello"):
    n: int


def _connect_publish_close(url: str, n: int, barrier: Barrier, errors: multiprocessing.Queue[str]) -> None:
    svc = Service(f"s{n}")

    @svc.on
    async def hello(event: Hello) -> None:
        pass

    async def main() -> None:
        barrier.wait()  # every process opens the new file at the same moment
        async with pycomms.connect(url, services=[svc]) as bus:
            await bus.publish(Hello(n=n))

    try:
        asyncio.run(main())
    except BaseException:
        errors.put(traceback.format_exc(limit=1).strip().splitlines()[-1])
        errors.close()
        errors.join_thread()  # flushed before the hard exit
        os._exit(1)


def test_processes_racing_on_a_new_file_all_connect(tmp_path: Path) -> None:
    """Each round: a fresh file, a writer holding its lock (as a process does while it
    switches the file to WAL, magnified to 0.3 s) and four processes connecting at once."""
    context = multiprocessing.get_context("fork")  # the parent's imports: processes start at once
    errors: multiprocessing.Queue[str] = context.Queue()
    failed = 0
    for round_ in range(ROUNDS):
        path = tmp_path / f"race{round_}.db"
        barrier = context.Barrier(PROCESSES + 1)
        processes = [
            context.Process(target=_connect_publish_close, args=(f"sqlite:///{path}", n, barrier, errors))
            for n in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        writer = sqlite3.connect(path, isolation_level=None)  # opened after the fork: never shared
        writer.execute("BEGIN IMMEDIATE")
        barrier.wait()
        time.sleep(0.3)  # the processes meet the lock now; none may fail, all must wait
        writer.execute("COMMIT")
        writer.close()
        for process in processes:
            process.join(120)
            failed += process.exitcode != 0
    reasons = [errors.get(timeout=5) for _ in range(failed)] if failed else []
    assert failed == 0, f"{failed} of {ROUNDS * PROCESSES} processes failed: {sorted(set(reasons))}"


def test_a_relative_path_that_cannot_be_opened_explains_the_slashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        with pytest.raises(pycomms.ConnectError) as info:
            await pycomms.connect("sqlite:///tmp/nothere/x.db")
        message = str(info.value)
        assert str(tmp_path / "tmp" / "nothere" / "x.db") in message, message
        assert "does not exist" in message, message
        assert "sqlite:////tmp/nothere/x.db (four slashes)" in message, message
        assert "\n" not in message
        assert info.value.__cause__ is None

    run_strict(main, 30)
