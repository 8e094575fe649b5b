"""Leases on real servers: crash recovery with XAUTOCLAIM, live slow handlers keep their
message, a stale ack settles nothing, delayed retries outlive the node that made them,
dead nodes leave presence."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from redis_support import REDIS_URL, url_for
from redis_worker import Hold

import pycomms
from pycomms import Command, Context, RetryLater, Service
from pycomms.testing import Recorder, eventually, run_strict, scale

WORKER = str(Path(__file__).with_name("redis_worker.py"))


class Slow(Command, name="leases.slow"):
    n: int
    seconds: float = 0.0


def _spawn(url: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, WORKER, url, mode], stdout=subprocess.PIPE, text=True)


def _read_until(proc: subprocess.Popen[str], prefix: str, count: int = 1) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    while len(seen) < count:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker exited after {len(seen)} {prefix!r} line(s)")
        if line.startswith(prefix):
            seen.append(line.split()[1])
    return seen


@pytest.mark.faults
def test_consumer_killed_with_100_pending_entries(namespace: str) -> None:
    """All 100 entries held by a SIGKILLed process are handled elsewhere within the
    visibility timeout + 5 s, each exactly once."""
    vt = 3.0
    url = url_for(namespace, visibility_timeout=vt, aof_warning="false")
    proc = _spawn(url, "hold")
    try:

        async def scenario() -> None:
            await asyncio.to_thread(_read_until, proc, "ready")
            rec = Recorder()
            async with pycomms.connect(url) as pub:
                await pub.send(*(Hold(n=i) for i in range(100)))
                held = await asyncio.to_thread(_read_until, proc, "held", 100)
                assert sorted(map(int, held)) == list(range(100))
                proc.kill()
                await asyncio.to_thread(proc.wait)
                killed = time.monotonic()
                takeover = Service("holders", concurrency=200)

                @takeover.on
                async def handle(job: Hold, ctx: Context) -> None:
                    assert ctx.attempt == 2, "a redelivery counts as the next attempt"
                    rec.add(job.n)

                async with pycomms.connect(url, services=[takeover]):
                    await rec.wait(100, vt + 5)
                    elapsed = time.monotonic() - killed
            print(f"\n[measured] 100 held entries handled elsewhere {elapsed:.2f}s after SIGKILL (vt={vt}s)")
            assert elapsed <= (vt + 5) * scale(), f"took {elapsed:.1f}s"
            rec.assert_exactly_once(list(range(100)))

        run_strict(scenario, 60)
    finally:
        _reap(proc)


def test_live_slow_handler_keeps_its_lease(namespace: str) -> None:
    """A handler running 4x the visibility timeout is not redelivered to the other instance."""
    vt = 1.0
    url = url_for(namespace, visibility_timeout=vt, aof_warning="false")

    def make(started: Recorder, finished: Recorder) -> Service:
        svc = Service("slowpokes", concurrency=2)

        @svc.on
        async def handle(job: Slow) -> None:
            started.add(job.n)
            await asyncio.sleep(job.seconds)
            finished.add(job.n)

        return svc

    async def scenario() -> None:
        started, finished = Recorder(), Recorder()
        one = pycomms.connect(url, services=[make(started, finished)])
        two = pycomms.connect(url, services=[make(started, finished)])
        async with one as bus, two:
            await bus.send(Slow(n=1, seconds=4 * vt))
            await finished.wait(1, 20)
        started.assert_exactly_once([1])

    run_strict(scenario, 60)


def test_stale_ack_settles_nothing(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    """A node whose event loop froze past the visibility timeout loses the message to
    another node; its late ack must not settle the other node's delivery, which then
    fails and is retried (if the stale ack had removed it, the retry would be lost)."""
    caplog.set_level(logging.INFO, logger="pycomms.redis")
    vt = 1.0
    url = url_for(namespace, visibility_timeout=vt, aof_warning="false")
    retry = pycomms.Retry(max_attempts=5, delay=0.05, jitter=0)
    attempts: list[tuple[str, int]] = []
    stop_frozen = threading.Event()
    frozen_ready = threading.Event()

    def frozen_node(done: Recorder) -> None:
        svc = Service("stale", retry=retry)

        @svc.on
        async def handle(job: Slow, ctx: Context) -> None:
            attempts.append(("frozen", ctx.attempt))
            if ctx.attempt == 1:
                time.sleep(3 * vt)  # noqa: ASYNC251 - freezes this node's loop on purpose: no lease renewal
            else:
                done.add(job.n)

        async def main() -> None:
            async with pycomms.connect(url, services=[svc]):
                frozen_ready.set()
                await asyncio.to_thread(stop_frozen.wait)

        asyncio.run(main())

    async def stale_logged() -> bool:
        return any("settles nothing" in r.getMessage() for r in caplog.records)

    async def first_delivery() -> bool:
        return bool(attempts)

    async def scenario() -> None:
        done = Recorder()
        svc = Service("stale", retry=retry)

        @svc.on
        async def handle(job: Slow, ctx: Context) -> None:
            attempts.append(("live", ctx.attempt))
            if ctx.attempt == 2:
                await eventually(stale_logged, 15, "the frozen node's stale ack")
                raise RuntimeError("fail once after the stale ack")
            done.add(job.n)

        thread = threading.Thread(target=frozen_node, args=(done,))
        thread.start()
        try:
            assert await asyncio.to_thread(frozen_ready.wait, 20)
            async with pycomms.connect(url) as pub:
                await pub.send(Slow(n=1))
                await eventually(first_delivery, 10, "the first delivery")
                async with pycomms.connect(url, services=[svc]) as live:
                    await done.wait(1, 30)
                    assert await live.dead_letters("stale") == []
        finally:
            stop_frozen.set()
            await asyncio.to_thread(thread.join, 30)

    run_strict(scenario, 60)
    assert attempts[:2] == [("frozen", 1), ("live", 2)]
    assert [a for _, a in attempts[2:]] == [3]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        pending = client.xpending(f"pycomms:{{{namespace}}}:cmd:leases.slow", "stale")
        assert pending["pending"] == 0
    finally:
        client.close()


def test_delayed_retry_is_moved_by_another_node(namespace: str) -> None:
    """The node that scheduled a retry is gone when it falls due; a live one moves it."""
    url = url_for(namespace, aof_warning="false")

    def make(record: Recorder) -> Service:
        svc = Service("later", retry=pycomms.Retry(max_attempts=3, delay=60))

        @svc.on
        async def handle(job: Slow, ctx: Context) -> None:
            if ctx.attempt == 1:
                record.add(("first", job.n))
                raise RetryLater(1.5)
            record.add(("retry", job.n), time.monotonic())

        return svc

    async def scenario() -> None:
        rec = Recorder()
        async with pycomms.connect(url) as pub:
            first = Recorder()
            async with pycomms.connect(url, services=[make(first)]):
                await pub.send(Slow(n=7))
                await first.wait(1, 10)
            left = time.monotonic()
            async with pycomms.connect(url, services=[make(rec)]):
                await rec.wait(1, 10)
            assert 1.0 <= rec.items[0] - left <= 1.5 + 3.0

    run_strict(scenario, 30)


def test_dead_node_leaves_presence_within_three_heartbeats(namespace: str) -> None:
    heartbeat = 0.5
    url = url_for(namespace, heartbeat=heartbeat, aof_warning="false")
    proc = _spawn(url, "idle")
    try:

        async def scenario() -> None:
            [node_id] = await asyncio.to_thread(_read_until, proc, "ready")
            async with pycomms.connect(url) as watcher:

                async def present() -> bool:
                    return node_id in {n.id for n in await watcher.nodes()}

                assert await present()
                proc.kill()
                await asyncio.to_thread(proc.wait)
                killed = time.monotonic()
                await eventually(lambda: _negate(present), 10, "the dead node to leave", interval=0.02)
                elapsed = time.monotonic() - killed
            print(f"\n[measured] SIGKILLed node gone from nodes() after {elapsed:.2f}s (heartbeat={heartbeat}s)")
            assert elapsed <= 3 * heartbeat + 0.3 * scale(), f"gone after {elapsed:.2f}s"

        run_strict(scenario, 30)
    finally:
        _reap(proc)


def _reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def _negate(check: object) -> bool:
    return not await check()  # type: ignore[operator]
