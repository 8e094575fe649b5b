"""The ``pycomms.backlog`` gauge on the backends that report it (memory, redis, amqp, nats):
a service with one handler slot, held busy, while more messages wait."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from conftest import Collector
from otel_messages import OrderPlaced
from shared_services import AMQP_URL, NATS_URL, REDIS_URL

import pycomms
from pycomms import Service
from pycomms.testing import eventually, require_reachable, run_strict

BACKENDS = {
    "memory": ("memory://backlog", 0, "memory"),
    "redis": (REDIS_URL, 6379, "redis"),
    "amqp": (AMQP_URL, 5672, "rabbitmq"),
    "nats": (NATS_URL, 4222, "nats"),
}
WAITING = 5


@pytest.mark.parametrize("scheme", list(BACKENDS))
def test_the_backlog_gauge_counts_what_waits_for_a_busy_service(scheme: str, collector: Collector) -> None:
    base, port, system = BACKENDS[scheme]
    if port:
        require_reachable(base, port)
    url = f"{base}{'&' if '?' in base else '?'}namespace=b{uuid.uuid4().hex[:12]}"
    slow = Service("slow", concurrency=1)
    seen: list[dict[str, object]] = []

    async def scenario() -> None:
        started, gate = asyncio.Event(), asyncio.Event()

        @slow.on
        async def hold(event: OrderPlaced) -> None:
            started.set()
            await gate.wait()

        async def backlog() -> dict[tuple[str, str], int]:
            """Collected from another thread, as a periodic exporter does."""
            points = await asyncio.to_thread(collector.points, "pycomms.backlog")
            seen[:] = [dict(p.attributes) for p in points]
            return {
                (str(p.attributes["messaging.consumer.group.name"]), str(p.attributes["messaging.system"])): p.value
                for p in points
            }

        async with pycomms.connect(url, services=[slow]) as bus:
            await bus.publish(*(OrderPlaced(order=n) for n in range(WAITING + 1)))
            await started.wait()

            async def all_but_one_wait() -> bool:
                return await backlog() == {("slow", system): WAITING}

            await eventually(all_but_one_wait, 20, f"a backlog of {WAITING} (one message in the handler)")
            gate.set()

            async def drained() -> bool:
                return await backlog() == {("slow", system): 0}

            await eventually(drained, 20, "the backlog back to 0")
        if scheme != "memory":
            async with pycomms.connect(url) as admin:
                await admin.drop_namespace(force=True)

    run_strict(scenario, 60)
    assert seen, "the gauge reported nothing"


def test_a_client_bus_and_a_closed_bus_report_no_backlog(collector: Collector) -> None:
    url = f"memory://backlog-{uuid.uuid4().hex[:8]}"
    quiet = Service("quiet")

    @quiet.on
    async def ignore(event: OrderPlaced) -> None:
        return None

    def points() -> list[object]:
        metric = collector.metrics().get("pycomms.backlog")
        return [p.value for p in metric.data.data_points] if metric is not None else []

    async def scenario() -> list[object]:
        async with pycomms.connect(url):  # no services: nothing to report
            assert await asyncio.to_thread(points) == []
        async with pycomms.connect(url, services=[quiet]):
            assert await asyncio.to_thread(points) == [0]
        return await asyncio.to_thread(points)

    assert run_strict(scenario, 20) == []
