"""Delivery mechanics of ``nats://`` the conformance kit does not reach: a consumer
process killed mid-handler (redelivered after the lease), a live slow handler keeping
its lease past ``ack_wait``, an observer and a dropped namespace leaving nothing."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import nats
import pytest
from nats_support import NATS_URL, url_for
from nats_worker import Work

import pycomms
from pycomms import Context, Event, Service
from pycomms.testing import Recorder, run_strict, scale

pytestmark = pytest.mark.timeout(120)
WORKER = Path(__file__).with_name("nats_worker.py")


class Seen(Event, name="natstest.seen"):
    n: int


async def streams_and_consumers(namespace: str) -> dict[str, list[str]]:
    """What the server holds for ``namespace``: stream name -> its consumers."""
    nc = await nats.connect(NATS_URL.split("?")[0], connect_timeout=5)
    try:
        js = nc.jetstream()
        found: dict[str, list[str]] = {}
        for info in await js.streams_info():
            if namespace in info.config.name:
                found[info.config.name] = [c.name for c in await js.consumers_info(info.config.name)]
        return found
    finally:
        await nc.close()


def test_a_consumer_killed_mid_handler_is_redelivered_after_the_lease(namespace: str) -> None:
    url = url_for(namespace, visibility_timeout=3)

    async def scenario() -> None:
        worker = await asyncio.create_subprocess_exec(sys.executable, str(WORKER), url, stdout=asyncio.subprocess.PIPE)
        assert worker.stdout is not None
        try:
            async with asyncio.timeout(30 * scale()):
                assert (await worker.stdout.readline()).strip() == b"READY"
            async with pycomms.connect(url) as sender:
                await sender.send(Work(n=7))
            async with asyncio.timeout(30 * scale()):
                assert (await worker.stdout.readline()).strip() == b"STARTED 7"
        finally:
            worker.kill()
            await worker.wait()
        killed = time.monotonic()
        rec = Recorder()
        svc = Service("crashy")

        @svc.on
        async def work(job: Work, ctx: Context) -> None:
            rec.add(job.n, ctx.attempt)

        async with pycomms.connect(url, services=[svc]):
            await rec.wait(1, 3 + 10)
        assert rec.items == [2], "the redelivery counts as attempt 2"
        assert time.monotonic() - killed > 1.0, "redelivered before the lease could expire"

    run_strict(scenario, 90)


def test_a_live_slow_handler_keeps_its_lease(namespace: str) -> None:
    """ack_wait is 1.5 s; the handler takes 4 s: renewed (+WPI), never handed to the
    other instance, handled once."""
    url = url_for(namespace, visibility_timeout=1.5, fetch_wait=1)

    async def scenario() -> None:
        rec = Recorder()

        def instance(tag: str) -> Service:
            svc = Service("slow")

            @svc.on
            async def work(job: Work, ctx: Context) -> None:
                rec.add(job.n, (tag, ctx.attempt))
                await asyncio.sleep(4)

            return svc

        async with pycomms.connect(url, services=[instance("a")]) as a, pycomms.connect(url, services=[instance("b")]):
            await a.send(Work(n=1))
            await rec.wait(1, 10)
            await asyncio.sleep(5)  # past the handler's end: a second delivery would show by now
        assert len(rec.items) == 1
        assert rec.items[0][1] == 1

    run_strict(scenario, 60)


def test_an_observer_leaves_no_consumer_and_a_drop_leaves_no_stream(namespace: str) -> None:
    url = url_for(namespace)

    async def scenario() -> None:
        rec = Recorder()
        keeper, observer = Service("keeper"), Service("watcher", ephemeral=True)
        keeper.on(Seen)(lambda m: None)

        @observer.on
        async def seen(m: Seen) -> None:
            rec.add(m.n)

        async with pycomms.connect(url, services=[keeper]) as bus:
            async with pycomms.connect(url, services=[observer]):
                await bus.publish(Seen(n=1))
                await rec.wait(1, 10)
                during = await streams_and_consumers(namespace)
            after = await streams_and_consumers(namespace)
        events = f"PYCOMMS_{namespace}_EVENTS"
        assert len(during[events]) == 2, during
        assert len(after[events]) == 1, after
        admin = await pycomms.connect(url)
        assert await admin.drop_namespace(force=True) == 4
        assert await streams_and_consumers(namespace) == {}

    run_strict(scenario, 60)
