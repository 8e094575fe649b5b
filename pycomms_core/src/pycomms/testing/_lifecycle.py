"""Lifecycle: graceful close, retention while down, observers, close and after."""

from __future__ import annotations

import asyncio
import threading

import pytest

from .._context import Context
from .._errors import BusClosed
from .._service import Service
from ._base import SuiteBase, recording, recording_job, scenario
from ._messages import Ask, Job, Ping
from ._runner import Recorder, scale


class LifecycleScenarios(SuiteBase):
    @scenario()
    async def test_graceful_close_drains_in_flight(self) -> None:
        started = asyncio.Event()
        rec = Recorder()

        def make() -> Service:
            svc = Service("draining")

            @svc.on
            async def handle(job: Job) -> None:
                if job.sleep:
                    started.set()
                    await asyncio.sleep(job.sleep)
                rec.add(job.n)

            return svc

        async with self.connect() as pub:
            bus = await self.connect(make())
            await pub.send(Job(n=1, sleep=0.5))
            async with asyncio.timeout(20 * scale()):
                await started.wait()
            await bus.close(grace=10)
            assert rec.items == [1], "close(grace) returned before the in-flight handler finished"
            async with self.connect(make()):
                await pub.send(Job(n=2))
                await rec.wait(2, 20)
        rec.assert_exactly_once([1, 2])

    @scenario(timeout=120)
    async def test_grace_expiry_cancels_without_ack_and_redelivers(self) -> None:
        started = asyncio.Event()
        cancelled = asyncio.Event()
        rec = Recorder()

        def make(stuck: bool) -> Service:
            svc = Service("stuck")

            @svc.on
            async def handle(job: Job) -> None:
                if stuck:
                    started.set()
                    try:
                        await asyncio.Event().wait()
                    except asyncio.CancelledError:
                        cancelled.set()
                        raise
                rec.add(job.n)

            return svc

        async with self.connect() as pub:
            first = await self.connect(make(stuck=True))
            await pub.send(Job(n=1))
            async with asyncio.timeout(20 * scale()):
                await started.wait()
            await first.close(grace=0.2)
            assert cancelled.is_set()
            async with self.connect(make(stuck=False)):
                await rec.wait(1, self.redelivery_timeout)
        rec.assert_exactly_once([1])

    @scenario()
    async def test_retention_while_service_is_down(self) -> None:
        rec = Recorder()

        def make() -> Service:
            svc = Service("sometimes")
            svc.on(Ping)(recording(rec))
            svc.on(Job)(recording_job(rec, offset=100))
            return svc

        async with self.connect() as pub:
            async with self.connect(make()) as first:
                self.require(first, "retention")
            await pub.publish(*(Ping(n=i) for i in range(5)))
            await pub.send(*(Job(n=i) for i in range(5)))
            async with self.connect(make()):
                await rec.wait(10, 30)
        rec.assert_exactly_once([*range(5), *range(100, 105)])

    @scenario()
    async def test_ephemeral_observer_gets_live_events_only(self) -> None:
        """An ephemeral service (an observer such as ``pycomms listen``) gets the events
        published while it runs, beside a lasting service that gets them too; nothing is
        kept for it while it is down, so a new instance starts with what comes next."""
        live, lasting = Recorder(), Recorder()

        def observer() -> Service:
            svc = Service("observer", ephemeral=True)
            svc.on(Ping)(recording(live))
            return svc

        keeper = Service("lasting")
        keeper.on(Ping)(recording(lasting))
        async with self.connect(keeper) as pub:
            async with self.connect(observer()):
                await pub.publish(*(Ping(n=i) for i in range(5)))
                await live.wait(5, 30)
            await pub.publish(*(Ping(n=i) for i in range(5, 10)))  # no observer runs: not kept for it
            await lasting.wait(10, 30)
            async with self.connect(observer()):
                await pub.publish(*(Ping(n=i) for i in range(10, 15)))
                await lasting.wait(15, 30)
                await live.wait(10, 30)
                await asyncio.sleep(0.3 * scale())  # room for a wrongly kept message to show up
        live.assert_exactly_once([*range(5), *range(10, 15)])
        lasting.assert_exactly_once(list(range(15)))

    # lifecycle -------------------------------------------------------------------------

    @scenario()
    async def test_close_is_idempotent(self) -> None:
        bus = await self.connect(Service("closing"))
        await asyncio.gather(bus.close(), bus.close())
        await bus.close()
        assert bus.closed

    @scenario()
    async def test_calls_after_close_raise_bus_closed(self) -> None:
        async with self.connect() as bus:
            pass
        with pytest.raises(BusClosed):
            await bus.publish(Ping(n=1))
        with pytest.raises(BusClosed):
            await bus.send(Job(n=1))
        with pytest.raises(BusClosed):
            await bus.request(Ask(n=1), timeout=1)
        with pytest.raises(BusClosed):
            await bus.nodes()
        with pytest.raises(BusClosed):
            await bus.dead_letters("x")
        with pytest.raises(BusClosed):
            await bus.serve()

    @scenario()
    async def test_context_carries_correlation(self) -> None:
        rec = Recorder()
        origin: dict[str, str] = {}
        first, second = Service("first"), Service("second")

        @first.on
        async def on_ping(m: Ping, ctx: Context) -> None:
            origin["id"] = ctx.message_id
            await ctx.send(Job(n=m.n))

        @second.on
        async def on_job(job: Job, ctx: Context) -> None:
            rec.add(job.n, (ctx.correlation_id, ctx.causation_id, ctx.attempt))

        async with self.connect(first, second) as bus:
            await bus.publish(Ping(n=1))
            await rec.wait(1, 10)
        assert rec.items == [(origin["id"], origin["id"], 1)]

    @scenario()
    async def test_sync_handler_runs_in_a_thread(self) -> None:
        rec = Recorder()
        svc = Service("threaded")
        loop_thread = threading.get_ident()

        @svc.on
        def handle(job: Job, ctx: Context) -> None:
            rec.add(job.n, threading.get_ident())

        async with self.connect(svc) as bus:
            await bus.send(Job(n=1))
            await rec.wait(1, 10)
        assert rec.items[0] != loop_thread
