"""Lifecycle of a bus and of its service runners, proven over ``probe://``.

``probe://`` is the memory broker behind a transport that records every
``receive(n)`` ask and every settle call, and can park calls at a `Gate`. Covered:
close (concurrent, cancelled, from a handler, with the fetcher waiting, handlers
running, deliveries just fetched, grace 0), exactly-once settlement, the concurrency
and prefetch bounds under churn, handlers raising odd exceptions, ``serve()`` and
signals, ``async with``.

Several of these tests reproduced defects found in review (now fixed in the core).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from probe_backend import (
    Gate,
    elapsed_of,
    new_url,
    opened,
    probe,
    probe_plugin,  # noqa: F401 - an autouse fixture: registers probe://
)
from pydantic_core import from_json

import pycomms
from pycomms import (
    BusClosed,
    Command,
    Context,
    Message,
    Reject,
    RemoteError,
    Request,
    Retry,
    RetryLater,
    Service,
)
from pycomms.spi import Envelope, new_id
from pycomms.testing import Recorder, run_strict, scale

# messages -------------------------------------------------------------------------------


class Job(Command, name="life.job"):
    n: int


class Boom(Command, name="life.boom"):
    n: int


class Rej(Command, name="life.reject"):
    n: int


class Later(Command, name="life.later"):
    n: int


class Block(Command, name="life.block"):
    n: int


class Reply(Message, name="life.reply"):
    n: int


class Ask(Request[Reply], name="life.ask"):
    n: int


class AskRej(Request[Reply], name="life.ask_reject"):
    n: int


class Blob(Message, name="life.blob"):
    data: Any


class AskBlob(Request[Blob], name="life.ask_blob"):
    n: int


def job_service(rec: Recorder, name: str = "jobs", concurrency: int = 4) -> Service:
    svc = Service(name, concurrency=concurrency)

    @svc.on
    async def handle(job: Job, ctx: Context) -> None:
        rec.add(job.n, (job.n, ctx.attempt))

    return svc


# close ----------------------------------------------------------------------------------


def test_close_is_idempotent_and_safe_to_call_concurrently() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        started = Recorder()
        svc = Service("slow", concurrency=2)

        @svc.on
        async def handle(job: Job) -> None:
            started.add(job.n)
            await release.wait()

        bus = await pycomms.connect(new_url(), services=[svc])
        transport = probe(bus)
        await bus.send(Job(n=1), Job(n=2))
        await started.wait(2, 2)
        closers = [asyncio.create_task(bus.close(grace=g)) for g in (5, 0.01, 3, 5, 5)]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*closers)
        assert bus.closed
        assert transport.closed
        assert await elapsed_of(bus.close()) < 0.1  # already closed: returns at once
        # the first close's grace (5 s) applies, so both handlers finished and acked
        assert sorted(d.completed[0] for d in transport.deliveries) == ["ack", "ack"]

    run_strict(scenario, 5)


def test_every_call_after_close_raises_bus_closed() -> None:
    async def scenario() -> None:
        bus = await pycomms.connect(new_url())
        await bus.close(grace=0)
        calls = [
            bus.send(Job(n=1)),
            bus.request(Ask(n=1), timeout=1),
            bus.nodes(),
            bus.dead_letters("x"),
            bus.replay("x"),
            bus.purge("x"),
            bus.serve(handle_signals=False),
        ]
        for call in calls:
            with pytest.raises(BusClosed):
                await call

    run_strict(scenario, 5)


def test_close_with_the_fetcher_waiting_in_receive_is_immediate() -> None:
    async def scenario() -> None:
        rec = Recorder()
        bus = await pycomms.connect(new_url(), services=[job_service(rec)])
        transport = probe(bus)
        await transport.until(lambda: len(transport.receivers[0].asks) == 1)  # parked in receive
        assert await elapsed_of(bus.close(grace=5)) < 0.5
        assert transport.closed

    run_strict(scenario, 5)


def test_close_lets_running_handlers_finish_and_ack() -> None:
    async def scenario() -> None:
        url = new_url()
        started, finished = Recorder(), Recorder()
        svc = Service("drain", concurrency=4)

        @svc.on
        async def handle(job: Job) -> None:
            started.add(job.n)
            await asyncio.sleep(0.05)
            await asyncio.sleep(0.05)
            finished.add(job.n)

        bus = await pycomms.connect(url, services=[svc])
        transport = probe(bus)
        await bus.send(*(Job(n=n) for n in range(4)))
        await started.wait(4, 2)
        await bus.close(grace=2)
        finished.assert_exactly_once(range(4))
        assert [d.completed for d in transport.deliveries] == [["ack"]] * 4
        assert not transport._broker.queue("drain").items

    run_strict(scenario, 5)


@pytest.mark.parametrize("grace", [0.0, 2.0])
def test_close_in_the_step_right_after_a_batch_was_fetched(grace: float) -> None:
    """A signal-started close lands right after the fetcher took a batch: with grace
    the batch is handled and acked; with grace 0 what was not settled is released and
    redelivered. Either way every message is handled once overall and settled at most
    once per delivery."""

    async def scenario() -> None:
        url = new_url()
        rec = Recorder()
        bus = await pycomms.connect(url, services=[job_service(rec, concurrency=8)])
        transport = probe(bus)
        transport.on_receive = lambda batch: bus._on_signal(signal.SIGTERM, grace)
        await bus.send(*(Job(n=n) for n in range(8)))
        await bus.close()  # joins the close the "signal" started
        assert all(len(d.calls) <= 1 and d.calls == d.completed for d in transport.deliveries)
        acked = {int(from_json(d.data)["data"]["n"]) for d in transport.deliveries if d.completed == ["ack"]}
        if grace:
            assert acked == set(range(8))

        again = Recorder()
        async with opened(url, [job_service(again, concurrency=8)]):
            if len(acked) < 8:
                await again.wait(8 - len(acked), 2)
        assert set(again.counts).isdisjoint(acked)
        assert set(again.counts) | acked == set(range(8))
        assert all(c == 1 for c in again.counts.values())

    run_strict(scenario, 5)


def test_grace_zero_cancels_running_handlers_at_once() -> None:
    async def scenario() -> None:
        started = Recorder()
        cancelled = Recorder()
        svc = Service("stuck", concurrency=4)

        @svc.on
        async def handle(block: Block) -> None:
            started.add(block.n)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.add(block.n)
                raise

        bus = await pycomms.connect(new_url(), services=[svc])
        transport = probe(bus)
        await bus.send(*(Block(n=n) for n in range(4)))
        await started.wait(4, 2)
        assert await elapsed_of(bus.close(grace=0)) < 0.5
        cancelled.assert_exactly_once(range(4))
        assert all(d.calls == [] for d in transport.deliveries)

    run_strict(scenario, 5)


def test_close_from_inside_a_handler_is_bounded_by_grace() -> None:
    """A handler awaiting ``bus.close(grace)`` must not wait for itself beyond grace."""

    async def scenario() -> None:
        calling = asyncio.Event()
        outcome: list[str] = []
        svc = Service("closer")
        holder: dict[str, pycomms.Bus] = {}

        @svc.on
        async def handle(job: Job) -> None:
            calling.set()
            try:
                await holder["bus"].close(grace=0.3)
                outcome.append("returned")
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise

        bus = holder["bus"] = await pycomms.connect(new_url(), services=[svc])
        await bus.send(Job(n=1))
        await calling.wait()
        took = await elapsed_of(bus.close())  # joins the close the handler started
        assert bus.closed
        assert took < 0.3 + 0.5
        assert outcome in (["returned"], ["cancelled"])

    run_strict(scenario, 5)


def test_close_from_inside_a_handler_returns_promptly_and_acks() -> None:
    async def scenario() -> None:
        url = new_url()
        calling = asyncio.Event()
        svc = Service("closer")
        holder: dict[str, pycomms.Bus] = {}

        @svc.on
        async def handle(job: Job) -> None:
            calling.set()
            await holder["bus"].close(grace=1.0)

        bus = holder["bus"] = await pycomms.connect(url, services=[svc])
        transport = probe(bus)
        await bus.send(Job(n=1))
        await calling.wait()
        took = await elapsed_of(bus.close())
        assert [d.completed for d in transport.deliveries] == [["ack"]]
        assert took < 0.5

    run_strict(scenario, 5)


# odd handlers ---------------------------------------------------------------------------


class Abort(BaseException):
    """Like KeyboardInterrupt or a framework's own abort, but neither of those two."""


def test_handler_raising_a_base_exception_keeps_its_slot() -> None:
    async def scenario() -> None:
        rec = Recorder()
        svc = Service("fragile", concurrency=1, retry=Retry(max_attempts=1))

        @svc.on
        async def handle(job: Job) -> None:
            if job.n == 0:
                raise Abort()
            rec.add(job.n)

        async with opened(new_url(), [svc], grace=0.1) as bus:
            transport = probe(bus)
            await bus.send(Job(n=0))
            await transport.until(lambda: len(transport.deliveries) == 1)
            await bus.send(Job(n=1))
            await rec.wait(1, 0.5)  # the one slot must still work
            await transport.until(lambda: bool(transport.deliveries[0].completed), 0.5)

    run_strict(scenario, 5)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def test_failure_with_an_unprintable_exception_is_still_settled() -> None:
    async def scenario() -> None:
        svc = Service("picky", retry=Retry(max_attempts=1))

        @svc.on
        async def handle(job: Job) -> None:
            raise Unprintable()

        async with opened(new_url(), [svc], grace=0.1) as bus:
            transport = probe(bus)
            await bus.send(Job(n=1))
            await transport.until(lambda: len(transport.deliveries) == 1)
            await transport.until(lambda: bool(transport.deliveries[0].completed), 0.5)
            assert transport.deliveries[0].completed == ["dead_letter"]

    run_strict(scenario, 5)


def test_request_whose_reply_cannot_be_serialized_fails_fast() -> None:
    async def scenario() -> None:
        svc = Service("blobs", retry=Retry(max_attempts=1))

        @svc.on
        async def answer(req: AskBlob) -> Blob:
            return Blob(data=object())

        async with opened(new_url(), [svc], grace=0.1) as bus:
            transport = probe(bus)
            try:
                await bus.request(AskBlob(n=1), timeout=0.5)
                outcome = "reply"
            except RemoteError:
                outcome = "remote error"
            except pycomms.RequestTimeout:
                outcome = "timeout"
            assert outcome == "remote error"
            assert [d.completed for d in transport.deliveries] == [["dead_letter"]]

    run_strict(scenario, 5)


# exactly-once settlement ----------------------------------------------------------------


def test_every_delivery_is_settled_exactly_once() -> None:
    async def scenario() -> None:
        svc = Service("settle", concurrency=8, retry=Retry(max_attempts=2, delay=0, jitter=0))

        @svc.on
        async def ok(job: Job) -> None:
            pass

        @svc.on
        async def boom(job: Boom) -> None:
            raise ValueError("always")

        @svc.on
        async def rej(job: Rej) -> None:
            raise Reject("no")

        @svc.on
        async def later(job: Later, ctx: Context) -> None:
            if ctx.attempt == 1:
                raise RetryLater(0)

        @svc.on
        async def block(job: Block) -> None:
            await asyncio.Event().wait()

        @svc.on
        async def ask(req: Ask) -> Reply:
            return Reply(n=req.n)

        @svc.on
        async def ask_rej(req: AskRej) -> Reply:
            raise Reject("no")

        bus = await pycomms.connect(new_url(), services=[svc])
        transport = probe(bus)
        ns = range(3)
        await bus.send(*(cls(n=n) for cls in (Job, Boom, Rej, Later, Block) for n in ns))
        invalid = [
            Envelope(id=new_id(), type=Job.type_name, kind="command", source="test", body=b'{"n":"x"}') for _ in ns
        ]
        await transport.publish(invalid)
        for n in ns:
            assert await bus.request(Ask(n=n), timeout=2) == Reply(n=n)
            with pytest.raises(RemoteError, match="rejected"):
                await bus.request(AskRej(n=n), timeout=2)
        expected = {
            (Job.type_name, 1): ["ack"],
            (Boom.type_name, 1): ["retry"],
            (Boom.type_name, 2): ["dead_letter"],
            (Rej.type_name, 1): ["dead_letter"],
            (Later.type_name, 1): ["retry"],
            (Later.type_name, 2): ["ack"],
            (Block.type_name, 1): [],  # cancelled at close: never settled
            (Ask.type_name, 1): ["ack"],
            (AskRej.type_name, 1): ["dead_letter"],
        }
        invalid_ids = {env.id for env in invalid}
        total = 3 * len(expected) + len(invalid)

        def settled() -> bool:
            return len(transport.deliveries) == total and sum(
                map(len, (d.completed for d in transport.deliveries))
            ) == (total - 3)

        await transport.until(settled)
        await bus.close(grace=0.05)
        for d in transport.deliveries:
            want = ["dead_letter"] if d.id in invalid_ids else expected[(d.type, d.attempt)]
            assert d.calls == want, (d.type, d.attempt, d.calls)
            assert d.completed == want
        letters = {(x.type, x.reason) for x in transport._broker.dead["settle"].values()}
        assert letters == {
            (Boom.type_name, "failed"),
            (Rej.type_name, "rejected"),
            (AskRej.type_name, "rejected"),
            (Job.type_name, "invalid"),
        }

    run_strict(scenario, 5)


# concurrency bound and prefetch ---------------------------------------------------------


def test_concurrency_and_prefetch_bounds_hold_under_churn() -> None:
    limit, count = 5, 200

    async def scenario() -> None:
        rec = Recorder()
        running = 0
        peak = 0
        svc = Service("churn", concurrency=limit, retry=Retry(max_attempts=3, delay=0.002, backoff=1, jitter=0))

        @svc.on
        async def handle(job: Job, ctx: Context) -> None:
            nonlocal running, peak
            rng = random.Random(job.n * 10 + ctx.attempt)
            running += 1
            peak = max(peak, running)
            try:
                await asyncio.sleep(rng.random() * 0.003)
                roll = rng.random()
                if ctx.attempt < 3 and roll < 0.15:
                    raise RuntimeError("flaky")
                if ctx.attempt < 3 and roll < 0.3:
                    raise RetryLater(0.001)
                rec.add(job.n)
            finally:
                running -= 1

        async with opened(new_url(), [svc]) as bus:
            transport = probe(bus)
            for start in range(0, count, 20):
                await bus.send(*(Job(n=n) for n in range(start, start + 20)))
                await asyncio.sleep(0)
            await rec.wait(count, 5)
            await transport.until(lambda: all(d.completed for d in transport.deliveries))
        rec.assert_exactly_once(range(count))
        assert peak == limit  # the bound was reached, so the check below means something
        [receiver] = transport.receivers
        over = [(n, out) for n, out in receiver.asks if n < 1 or n + out > limit]
        assert not over, f"receive(n) asked beyond the free slots (n, unsettled): {over[:5]}"
        assert all(len(d.completed) == 1 for d in transport.deliveries)
        assert any(d.completed == ["retry"] for d in transport.deliveries)

    run_strict(scenario, 10)


# serve and signals ----------------------------------------------------------------------


def _previous_handler(signum: int, frame: Any) -> None:
    raise AssertionError(f"the test's own handler got signal {signum}")


@pytest.fixture
def own_sigterm_handler() -> Iterator[Callable[[int, Any], None]]:
    """A Python-level SIGTERM handler installed before the bus serves; the original
    one is restored afterwards whatever serve() did (so a stray SIGTERM never kills
    the test run)."""
    original = signal.signal(signal.SIGTERM, _previous_handler)
    try:
        yield _previous_handler
    finally:
        signal.signal(signal.SIGTERM, original)


def test_sigterm_closes_a_serving_bus_gracefully(own_sigterm_handler: Any) -> None:
    async def scenario() -> None:
        finished = Recorder()
        svc = Service("thumbs")

        @svc.on
        async def handle(job: Job) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)
            finished.add(job.n)

        bus = await pycomms.connect(new_url(), services=[svc])
        transport = probe(bus)
        serving = asyncio.create_task(bus.serve(grace=2))
        await asyncio.sleep(0)  # serve() installs its handlers in its first step
        await bus.send(Job(n=1))
        async with asyncio.timeout(2 * scale()):
            await serving
        assert bus.closed
        finished.assert_exactly_once([1])
        assert [d.completed for d in transport.deliveries] == [["ack"]]

    run_strict(scenario, 5)


def test_serve_restores_the_previous_signal_handlers(own_sigterm_handler: Any) -> None:
    async def scenario() -> None:
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        bus = await pycomms.connect(new_url())
        serving = asyncio.create_task(bus.serve(grace=0))
        await asyncio.sleep(0)
        assert signal.getsignal(signal.SIGTERM) is not own_sigterm_handler  # serve() took over
        await bus.close(grace=0)
        await serving
        after = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        assert after == before

    run_strict(scenario, 5)


def test_serve_cancelled_removes_its_signal_handlers(own_sigterm_handler: Any) -> None:
    async def scenario() -> None:
        async with opened(new_url()) as bus:
            serving = asyncio.create_task(bus.serve(grace=0))
            await asyncio.sleep(0)
            loop = asyncio.get_running_loop()
            assert loop.remove_signal_handler(signal.SIGTERM) is True  # installed ...
            loop.add_signal_handler(signal.SIGTERM, bus._on_signal, signal.SIGTERM, 0)
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serving
            assert loop.remove_signal_handler(signal.SIGTERM) is False  # ... and removed
            assert not bus.closed  # cancelling serve() is not closing the bus

    run_strict(scenario, 5)


# async with -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["connect", "bus"])
def test_async_with_closes_the_bus_when_the_body_raises(form: str) -> None:
    async def scenario() -> None:
        rec = Recorder()
        seen: dict[str, Any] = {}

        async def body() -> None:
            if form == "connect":
                async with pycomms.connect(new_url(), services=[job_service(rec)]) as bus:
                    seen["bus"] = bus
                    await bus.send(Job(n=1))
                    await rec.wait(1, 2)
                    raise ZeroDivisionError
            bus = await pycomms.connect(new_url(), services=[job_service(rec)])
            seen["bus"] = bus
            async with bus:
                await bus.send(Job(n=1))
                await rec.wait(1, 2)
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await body()
        bus = seen["bus"]
        transport = probe(bus)
        assert bus.closed
        assert transport.closed
        assert bus.node.id not in transport._broker.nodes
        with pytest.raises(BusClosed):
            await bus.send(Job(n=2))

    run_strict(scenario, 5)


# open racing close ----------------------------------------------------------------------


def test_close_while_opening_wins() -> None:
    async def scenario() -> None:
        rec = Recorder()
        connecting = pycomms.connect(new_url(), services=[job_service(rec)])
        bus = connecting._bus
        transport = probe(bus)
        gate = transport.open_gate = Gate()

        async def connect() -> pycomms.Bus:
            return await connecting

        opener = asyncio.create_task(connect())
        await gate.reached()
        await bus.close(grace=0)
        gate.open()
        [result] = await asyncio.gather(opener, return_exceptions=True)
        state, nodes = bus._state, set(transport._broker.nodes)
        for runner in bus._runners:  # tidy up whatever _open started, so the loop closes cleanly
            await runner.stop(0)
        assert isinstance(result, BaseException), f"connect() returned a bus in state {state}"
        assert state is pycomms.BusState.CLOSED
        assert bus.node.id not in nodes

    run_strict(scenario, 5)
