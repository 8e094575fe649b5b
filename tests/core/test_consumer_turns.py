"""How a service's workers share fetching and handling (`ServiceRunner._work`): the
worker that fetches handles what it fetched, another fetches while a handler waits,
and a backlog never keeps the event loop from other tasks for more than a batch."""

from __future__ import annotations

import asyncio

import pytest

import pycomms
from pycomms import Event, Service
from pycomms.spi import new_id
from pycomms.testing import Recorder, run_strict


class Tick(Event, name="turns.tick"):
    n: int


def url() -> str:
    return f"memory://turns?namespace=n{new_id()[-12:]}"


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_backlog_leaves_other_tasks_a_turn_after_each_batch(concurrency: int) -> None:
    async def scenario() -> None:
        handled = Recorder()
        svc = Service("backlog", concurrency=concurrency)

        @svc.on
        async def on_tick(tick: Tick) -> None:  # never waits
            handled.add(tick.n)

        async with pycomms.connect(url(), services=[svc]) as bus:
            await bus.publish(*(Tick(n=n) for n in range(1000)))  # memory://: all queued at once
            seen_by_other_task: list[int] = []

            async def other() -> None:
                seen_by_other_task.append(handled.total)

            await asyncio.create_task(other())
            await handled.wait(1000, 5)
        assert seen_by_other_task[0] <= 2 * concurrency, seen_by_other_task  # at most two batches ran first
        handled.assert_exactly_once(range(1000))

    run_strict(scenario, 10)


def test_a_waiting_handler_does_not_stop_fetching() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        handled = Recorder()
        svc = Service("waits", concurrency=2)

        @svc.on
        async def on_tick(tick: Tick) -> None:
            if tick.n == 0:
                await release.wait()
            handled.add(tick.n)

        async with pycomms.connect(url(), services=[svc]) as bus:
            await bus.publish(Tick(n=0))
            await asyncio.sleep(0)  # the first worker fetches and waits in the handler
            await bus.publish(Tick(n=1))
            await handled.wait(1, 5)  # handled while the first handler still waits
            assert handled.items == [1]
            release.set()
            await handled.wait(2, 5)

    run_strict(scenario, 10)


def test_a_backlog_after_waiting_receives_still_leaves_other_tasks_a_turn() -> None:
    """At concurrency 1 a worker whose receives waited fetches without a yield first
    (`ServiceRunner._mark_waited`); a backlog that then arrives still gets a yield after
    each message but the first two."""

    async def scenario() -> None:
        handled = Recorder()
        svc = Service("after-waits", concurrency=1)

        @svc.on
        async def on_tick(tick: Tick) -> None:  # never waits
            handled.add(tick.n)

        async with pycomms.connect(url(), services=[svc]) as bus:
            for n in range(40):  # one at a time: every receive waits
                await bus.publish(Tick(n=n))
                await handled.wait(n + 1, 5)
            await bus.publish(*(Tick(n=n) for n in range(40, 1040)))
            seen_by_other_task: list[int] = []

            async def other() -> None:
                seen_by_other_task.append(handled.total)

            await asyncio.create_task(other())
            await handled.wait(1040, 5)
        assert seen_by_other_task[0] - 40 <= 2, seen_by_other_task
        handled.assert_exactly_once(range(1040))

    run_strict(scenario, 10)
