"""Every await in the core's publish and consume paths, cancelled.

The scenarios run over ``probe://``: the memory broker behind a transport whose calls
can be parked at a `Gate` (before or after the broker accepted a publish, in open,
subscribe and settle) and whose deliveries record every settle call. Parking a call is
how a real network transport suspends; the memory transport never does.

Several of these tests reproduced defects found in review (now fixed in the core).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from probe_backend import (
    Gate,
    ProbeReceiver,
    elapsed_of,
    new_url,
    opened,
    probe,
    probe_plugin,  # noqa: F401 - an autouse fixture: registers probe://
)

import pycomms
from pycomms import BusClosed, Command, Context, Event, Message, PublishError, Request, Service
from pycomms.spi import Subscription
from pycomms.testing import Recorder, run_strict, scale

# messages -------------------------------------------------------------------------------


class Ping(Event, name="cancel.ping"):
    n: int


class Job(Command, name="cancel.job"):
    n: int


class Reply(Message, name="cancel.reply"):
    n: int


class Ask(Request[Reply], name="cancel.ask"):
    n: int


def sink_service(rec: Recorder, name: str = "sink") -> Service:
    svc = Service(name, concurrency=4)

    @svc.on
    async def on_ping(ping: Ping) -> None:
        rec.add(("publish", ping.n))

    @svc.on
    async def on_job(job: Job) -> None:
        rec.add(("send", job.n))

    return svc


# publish / send -------------------------------------------------------------------------

MANY = 20


@pytest.mark.parametrize("stage", ["before", "after"])
@pytest.mark.parametrize("verb", ["publish", "send"])
def test_cancelled_publish_or_send_leaves_the_bus_usable(verb: str, stage: str) -> None:
    """Many callers cancelled while the transport holds their call, before or after it
    accepted the message: nothing is counted as still publishing, the bus keeps
    working, and exactly the accepted messages are delivered, once."""

    async def scenario() -> None:
        rec = Recorder()
        async with opened(new_url(), [sink_service(rec)]) as bus:
            transport = probe(bus)
            gate = Gate()
            setattr(transport, f"publish_{stage}", gate)

            def call(n: int) -> Any:
                return bus.publish(Ping(n=n)) if verb == "publish" else bus.send(Job(n=n))

            callers = [asyncio.create_task(call(n)) for n in range(MANY)]
            await gate.reached(MANY)
            for task in callers:
                task.cancel()
            results = await asyncio.gather(*callers, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            assert gate.waiting == 0
            assert bus._publishing == 0

            setattr(transport, f"publish_{stage}", None)
            await call(1000)
            accepted = set(range(MANY)) if stage == "after" else set()
            await rec.wait(len(accepted) + 1, 2)
        rec.assert_exactly_once({(verb, n) for n in accepted | {1000}})

    run_strict(scenario, 5)


def test_close_waits_for_a_publish_in_flight_within_grace() -> None:
    async def scenario() -> None:
        rec = Recorder()
        bus = await pycomms.connect(new_url(), services=[sink_service(rec)])
        gate = probe(bus).publish_before = Gate()
        publisher = asyncio.create_task(bus.send(Job(n=1)))
        await gate.reached()
        closer = asyncio.create_task(bus.close(grace=2))
        await asyncio.sleep(0.05)  # bounded negative check: close is waiting for the publish
        assert not closer.done()
        gate.open()
        await publisher
        await closer
        assert probe(bus).closed

    run_strict(scenario, 5)


def test_close_gives_up_on_a_stuck_publish_after_grace() -> None:
    async def scenario() -> None:
        bus = await pycomms.connect(new_url())
        transport = probe(bus)
        gate = transport.publish_before = Gate()
        transport.on_close = gate.open  # the link goes down: parked publishes fail
        publisher = asyncio.create_task(bus.send(Job(n=1)))
        await gate.reached()
        assert await elapsed_of(bus.close(grace=0.2)) < 1.0
        with pytest.raises(PublishError):
            await publisher
        assert bus._publishing == 0

    run_strict(scenario, 5)


def test_cancelled_publisher_unblocks_a_close_waiting_for_it() -> None:
    async def scenario() -> None:
        bus = await pycomms.connect(new_url())
        gate = probe(bus).publish_before = Gate()
        publisher = asyncio.create_task(bus.send(Job(n=1)))
        await gate.reached()
        closer = asyncio.create_task(bus.close(grace=5))
        await asyncio.sleep(0.05)  # bounded negative check: close waits for the publish
        assert not closer.done()
        publisher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publisher
        assert await elapsed_of(closer) < 0.5
        assert bus._publishing == 0

    run_strict(scenario, 5)


# request --------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["before_accept", "after_accept", "awaiting_reply"])
def test_cancelled_requests_leave_nothing_behind(stage: str) -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        answered = Recorder()
        svc = Service("answer", concurrency=MANY)

        @svc.on
        async def answer(req: Ask) -> Reply:
            if req.n < MANY:
                await release.wait()
            answered.add(req.n)
            return Reply(n=req.n)

        async with opened(new_url(), [svc]) as bus:
            transport = probe(bus)
            gate = Gate()
            if stage == "before_accept":
                transport.publish_before = gate
            elif stage == "after_accept":
                transport.publish_after = gate
            callers = [asyncio.create_task(bus.request(Ask(n=n), timeout=30)) for n in range(MANY)]
            if stage == "awaiting_reply":
                await transport.until(lambda: len(transport.deliveries) == MANY)
            else:
                await gate.reached(MANY)
            for task in callers:
                task.cancel()
            results = await asyncio.gather(*callers, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            assert bus._requests.pending == 0
            assert bus._publishing == 0

            transport.publish_before = transport.publish_after = None
            release.set()
            assert await bus.request(Ask(n=1000), timeout=2) == Reply(n=1000)
            if stage != "before_accept":  # accepted requests are still handled; their replies are dropped
                await answered.wait(MANY + 1, 2)
            assert bus._requests.pending == 0

    run_strict(scenario, 5)


def test_request_times_out_while_its_publish_is_parked() -> None:
    async def scenario() -> None:
        async with opened(new_url()) as bus:
            gate = probe(bus).publish_before = Gate()
            with pytest.raises(pycomms.RequestTimeout):
                await bus.request(Ask(n=1), timeout=0.1)
            assert gate.waiting == 0
            assert bus._requests.pending == 0
            assert bus._publishing == 0

    run_strict(scenario, 5)


def test_request_times_out_when_its_publish_swallows_the_deadline_s_cancel() -> None:
    """A driver may swallow the cancellation the deadline sends into a publish: the
    request still ends with `RequestTimeout` at its deadline, not never, and leaves the
    task's cancellation count as it found it."""

    async def scenario() -> None:
        async with opened(new_url()) as bus:
            probe(bus).publish_swallows = 1
            task = asyncio.current_task()
            assert task is not None
            before = task.cancelling()
            with pytest.raises(pycomms.RequestTimeout):
                await bus.request(Ask(n=1), timeout=0.2)  # nobody handles Ask: only the deadline ends it
            assert probe(bus).publish_swallows == 0
            assert task.cancelling() == before
            assert bus._requests.pending == 0

    run_strict(scenario, 5)


def test_request_cancelled_in_the_step_its_reply_arrives() -> None:
    async def scenario() -> None:
        svc = Service("answer")

        @svc.on
        async def answer(req: Ask) -> Reply:
            return Reply(n=req.n)

        async with opened(new_url(), [svc]) as bus:
            transport = probe(bus)
            caller = asyncio.create_task(bus.request(Ask(n=1), timeout=5))
            transport.on_reply = lambda data: caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            transport.on_reply = None
            assert bus._requests.pending == 0
            assert await bus.request(Ask(n=2), timeout=2) == Reply(n=2)

    run_strict(scenario, 5)


def test_pending_request_fails_with_bus_closed() -> None:
    async def scenario() -> None:
        bus = await pycomms.connect(new_url())
        caller = asyncio.create_task(bus.request(Ask(n=1), timeout=30))
        await asyncio.sleep(0)  # the request is published (memory never suspends) and waits
        await bus.close(grace=0)
        with pytest.raises(BusClosed):
            await caller

    run_strict(scenario, 5)


def test_request_cancelled_while_close_fails_it() -> None:
    """Close fails the reply future with BusClosed and, in the same step, the requester
    is cancelled: the exception is still retrieved (Task.__wakeup reads it)."""

    async def scenario() -> None:
        bus = await pycomms.connect(new_url())
        transport = probe(bus)
        caller = asyncio.create_task(bus.request(Ask(n=1), timeout=30))
        await asyncio.sleep(0)
        # shutdown cancels the requester in the same step as close fails its future
        transport.on_close = caller.cancel
        await bus.close(grace=0)
        with pytest.raises(asyncio.CancelledError):
            await caller

    run_strict(scenario, 5)


def test_request_still_publishing_when_close_gives_up() -> None:
    async def scenario() -> None:
        bus = await pycomms.connect(new_url())
        transport = probe(bus)
        gate = transport.publish_before = Gate()
        transport.on_close = gate.open  # the link goes down: the parked publish fails
        caller = asyncio.create_task(bus.request(Ask(n=1), timeout=30))
        await gate.reached()
        await bus.close(grace=0)
        with pytest.raises(pycomms.PyCommsError):
            await caller

    run_strict(scenario, 5)


# close ----------------------------------------------------------------------------------


def test_cancelling_the_closer_does_not_stop_the_close() -> None:
    async def scenario() -> None:
        started, release = asyncio.Event(), asyncio.Event()
        svc = Service("slow")

        @svc.on
        async def handle(job: Job) -> None:
            started.set()
            await release.wait()

        bus = await pycomms.connect(new_url(), services=[svc])
        transport = probe(bus)
        await bus.send(Job(n=1))
        await started.wait()
        closer = asyncio.create_task(bus.close(grace=5))
        for _ in range(2):  # the closer starts the close task, which then runs
            await asyncio.sleep(0)
        assert bus._state is pycomms.BusState.CLOSING
        closer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closer
        assert not bus.closed
        release.set()  # the handler finishes within grace, the shielded close goes on
        await bus.close(grace=0)  # joins the close in progress
        assert bus.closed
        assert transport.closed
        [delivery] = transport.deliveries
        assert delivery.completed == ["ack"]

    run_strict(scenario, 5)


def test_close_survives_a_cancelled_close_task() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        svc = Service("slow")

        @svc.on
        async def handle(job: Job) -> None:
            await release.wait()

        bus = await pycomms.connect(new_url(), services=[svc])
        transport = probe(bus)
        await bus.send(Job(n=1))
        await transport.until(lambda: len(transport.deliveries) == 1)
        closer = asyncio.create_task(bus.close(grace=5))
        await asyncio.sleep(0)
        me = asyncio.current_task()
        sweep = [t for t in asyncio.all_tasks() if t is not me]
        for task in sweep:
            task.cancel()
        await asyncio.gather(*sweep, return_exceptions=True)
        try:
            await bus.close(grace=0)
            raised = None
        except asyncio.CancelledError as exc:
            raised = exc
        assert raised is None, "close() raised CancelledError in a task nobody cancelled"
        assert bus.closed
        assert transport.closed
        assert closer.done()

    run_strict(scenario, 5)


# consume: handlers, settling and replies cut by the grace period ------------------------


def test_grace_expiry_cancels_handlers_without_settling() -> None:
    async def scenario() -> None:
        url = new_url()
        started = Recorder()
        svc = Service("stuck", concurrency=3)

        @svc.on
        async def handle(job: Job) -> None:
            started.add(job.n)
            await asyncio.Event().wait()

        bus = await pycomms.connect(url, services=[svc])
        transport = probe(bus)
        await bus.send(*(Job(n=n) for n in range(5)))
        await started.wait(3, 2)
        assert await elapsed_of(bus.close(grace=0.1)) < 1.0
        assert all(d.calls == [] for d in transport.deliveries)

        again = Recorder()
        svc2 = Service("stuck", concurrency=5)

        @svc2.on
        async def handle2(job: Job, ctx: Context) -> None:
            again.add(job.n, (job.n, ctx.attempt))

        async with opened(url, [svc2]):
            await again.wait(5, 2)
        again.assert_exactly_once(range(5))
        assert {n for n, attempt in again.items if attempt == 2} == set(started.counts)

    run_strict(scenario, 5)


@pytest.mark.parametrize("where", ["settle", "reply"])
def test_grace_expiry_while_settling_or_replying(where: str) -> None:
    """The worker is cancelled inside ``delivery.ack()`` or while publishing the reply:
    nothing is settled and the message comes back with attempt 2."""

    async def scenario() -> None:
        url = new_url()
        svc = Service("answer")

        @svc.on
        async def answer(req: Ask) -> Reply:
            return Reply(n=req.n)

        bus = await pycomms.connect(url, services=[svc])
        transport = probe(bus)
        gate = Gate()
        if where == "settle":
            transport.settle_gate = gate
        else:
            transport.gated_kinds = frozenset({"reply"})
            transport.publish_before = gate
        caller = asyncio.create_task(bus.request(Ask(n=1), timeout=30))
        await gate.reached()
        await bus.close(grace=0.05)
        if where == "settle":  # the reply went out before the ack was cut
            assert await caller == Reply(n=1)
        else:
            with pytest.raises(BusClosed):
                await caller
        [delivery] = transport.deliveries
        assert delivery.completed == []

        again = Recorder()
        svc2 = Service("answer")

        @svc2.on
        async def answer2(req: Ask, ctx: Context) -> Reply:
            again.add(ctx.attempt)
            return Reply(n=req.n)

        async with opened(url, [svc2]):
            await again.wait(1, 2)
        assert again.items == [2]

    run_strict(scenario, 5)


def test_handler_with_shielded_cleanup_delays_close_only_by_that_cleanup() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        cleaned: list[int] = []
        svc = Service("tidy")

        @svc.on
        async def handle(job: Job) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.shield(asyncio.sleep(0.1))  # short cleanup, then re-raise
                cleaned.append(job.n)
                raise

        bus = await pycomms.connect(new_url(), services=[svc])
        transport = probe(bus)
        await bus.send(Job(n=1))
        await started.wait()
        took = await elapsed_of(bus.close(grace=0.1))
        assert 0.2 <= took < 1.0
        assert cleaned == [1]
        assert transport.deliveries[0].calls == []

    run_strict(scenario, 5)


def test_sync_handler_past_grace_is_released_while_its_thread_runs_on() -> None:
    """Documented: a sync handler cannot be interrupted; close returns after grace, the
    message is released unsettled, the thread finishes on its own."""

    async def scenario() -> None:
        entered, leave = threading.Event(), threading.Event()
        svc = Service("blocking")

        @svc.on
        def handle(job: Job) -> None:
            entered.set()
            leave.wait(5)

        bus = await pycomms.connect(new_url(), services=[svc])
        transport = probe(bus)
        await bus.send(Job(n=1))
        await asyncio.to_thread(entered.wait, 2)
        assert await elapsed_of(bus.close(grace=0.1)) < 1.0
        assert transport.deliveries[0].calls == []
        leave.set()  # let the thread end before the loop shuts its executor down

    run_strict(scenario, 5)


def test_close_is_bounded_with_a_handler_that_swallows_cancellation() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        svc = Service("stubborn")

        @svc.on
        async def handle(job: Job) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # badly behaved: "cleans up" and returns normally

        bus = await pycomms.connect(new_url(), services=[svc])
        await bus.send(Job(n=1))
        await started.wait()
        closer = asyncio.create_task(bus.close(grace=0.1))
        done, _ = await asyncio.wait({closer}, timeout=1.0 * scale())
        if not done:  # unblock the stuck worker so the loop can be torn down cleanly
            for worker in bus._runners[0]._workers:
                worker.cancel()
            await closer
        assert done, "close(grace=0.1) did not return within 1 s"

    run_strict(scenario, 5)


# open -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["open", "subscribe"])
def test_cancelled_connect_releases_everything(where: str) -> None:
    async def scenario() -> None:
        first, second = Service("first"), Service("second")
        first.on(Job)(lambda job: None)
        second.on(Ping)(lambda ping: None)
        connecting = pycomms.connect(new_url(), services=[first, second])
        bus = connecting._bus
        transport = probe(bus)
        gate = Gate()
        if where == "open":
            transport.open_gate = gate
        else:  # the first service is subscribed and running, the second one parks
            gate_count = {"n": 0}
            real = transport.subscribe

            async def second_parks(sub: Subscription) -> ProbeReceiver:
                gate_count["n"] += 1
                if gate_count["n"] == 2:
                    await gate.park()
                return await real(sub)

            transport.subscribe = second_parks  # type: ignore[method-assign]

        async def connect() -> pycomms.Bus:
            return await connecting

        opener = asyncio.create_task(connect())
        await gate.reached()
        opener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opener
        assert bus.closed
        assert transport.closed
        assert bus.node.id not in {n.id for n in transport._broker.nodes.values()}
        with pytest.raises(BusClosed):
            await bus.publish(Ping(n=1))

    run_strict(scenario, 5)


def test_close_gets_past_a_receiver_that_swallows_a_cancellation() -> None:
    """A driver may swallow one cancellation of ``receive()`` (Python 3.11's ``wait_for``
    does when it races a result); close cancels again until the fetch has stopped."""

    async def scenario() -> None:
        rec = Recorder()
        bus = await pycomms.connect(new_url(), services=[sink_service(rec)])
        await probe(bus).until(lambda: bool(probe(bus).receivers and probe(bus).receivers[0].asks))
        probe(bus).swallow_cancels = 2
        await bus.close(grace=0.2)
        assert probe(bus).closed
        assert probe(bus).swallow_cancels == 0

    run_strict(scenario, 10)


@pytest.mark.parametrize("stage", ["publishing", "awaiting_reply"])
def test_outside_cancel_in_the_step_the_deadline_passes_stays_a_cancel(stage: str) -> None:
    """The request's deadline and someone else's cancel land in one loop step: the
    caller sees CancelledError (the deadline gives up its own cancellation only)."""

    async def scenario() -> None:
        async with opened(new_url()) as bus:  # nobody handles Ask: only the deadline ends it
            transport = probe(bus)
            gate = Gate()
            if stage == "publishing":
                transport.publish_before = gate
            caller = asyncio.create_task(bus.request(Ask(n=1), timeout=0.05))
            if stage == "publishing":
                await gate.reached()
            else:
                await asyncio.sleep(0)  # the request is published (memory never suspends) and waits
                assert bus._requests.pending == 1
                assert bus._publishing == 0
            # a timer due after the deadline's: in the next step both run, the deadline first
            asyncio.get_running_loop().call_later(0.06, caller.cancel)
            time.sleep(0.1)  # noqa: ASYNC251 - blocks the loop on purpose: both are due when it next runs
            with pytest.raises(asyncio.CancelledError):
                await caller
            assert bus._requests.pending == 0
            assert bus._publishing == 0
            transport.publish_before = None
            gate.open()
            with pytest.raises(pycomms.RequestTimeout):
                await bus.request(Ask(n=2), timeout=0.05)

    run_strict(scenario, 5)
