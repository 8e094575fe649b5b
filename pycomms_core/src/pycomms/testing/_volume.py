"""Volume and concurrency: many messages at once, exact limits."""

from __future__ import annotations

import asyncio

from .._service import Service
from ._base import SuiteBase, recording, scenario
from ._messages import Job, Ping
from ._runner import Recorder


class VolumeScenarios(SuiteBase):
    @scenario(timeout=90)
    async def test_parallel_publish_volume(self) -> None:
        """Many concurrent publishers, two services, one of them with two instances."""
        rec_a, rec_b = Recorder(), Recorder()

        def service_a() -> Service:
            svc = Service("volume-a", concurrency=32)
            svc.on(Ping)(recording(rec_a))
            return svc

        svc_b = Service("volume-b", concurrency=32)
        svc_b.on(Ping)(recording(rec_b))
        tasks, per_task = 32, 25
        async with self.connect(service_a(), svc_b), self.connect(service_a()), self.connect() as pub:

            async def publisher(t: int) -> None:
                for i in range(per_task):
                    await pub.publish(Ping(n=t * per_task + i))

            await asyncio.gather(*(publisher(t) for t in range(tasks)))
            await rec_a.wait(tasks * per_task, 60)
            await rec_b.wait(tasks * per_task, 60)
        rec_a.assert_exactly_once(list(range(tasks * per_task)))
        rec_b.assert_exactly_once(list(range(tasks * per_task)))

    @scenario()
    async def test_batch_publish(self) -> None:
        rec = Recorder()
        svc = Service("batch", concurrency=16)
        svc.on(Ping)(recording(rec))
        async with self.connect(svc) as bus:
            await bus.publish(*(Ping(n=i) for i in range(200)))
            await rec.wait(200, 30)
        rec.assert_exactly_once(list(range(200)))

    @scenario()
    async def test_concurrency_limit_is_exact(self) -> None:
        running = 0
        peak = 0
        rec = Recorder()
        svc = Service("bounded", concurrency=3)

        @svc.on
        async def handle(job: Job) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                await asyncio.sleep(0.15)
            finally:
                running -= 1
            rec.add(job.n)

        async with self.connect() as pub:
            await pub.send(Job(n=-1))
            async with self.connect(svc):
                await rec.wait(1, 20)
                await pub.send(*(Job(n=i) for i in range(15)))
                await rec.wait(16, 30)
        assert peak == 3, f"expected exactly 3 handlers at once at peak, saw {peak}"
        rec.assert_exactly_once([-1, *range(15)])
