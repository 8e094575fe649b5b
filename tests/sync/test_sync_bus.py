"""`pycomms.sync`: the blocking twin of `pycomms.Bus`, over Redis, RabbitMQ and PostgreSQL:
the same calls, results and errors, from one thread and from many at once."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from sync_messages import Fail, Job, Noted, WhoAmI, echo_service
from sync_support import Counter

import pycomms
import pycomms.sync
from pycomms import Context, Reject, Service
from pycomms.testing import scale


def test_every_call_blocks_until_done_and_gives_what_the_async_bus_gives(url: str) -> None:
    jobs = Counter()
    noted = Counter()
    worker = Service("worker")

    @worker.on
    def job(command: Job, ctx: Context) -> None:
        if command.n < 0:
            raise Reject(f"negative job {command.n}")
        jobs.add(command.n)

    @worker.on
    async def note(event: Noted) -> None:
        noted.add(event.n)

    with pycomms.sync.connect(url, services=[worker, echo_service()], name="sync-test") as bus:
        assert not bus.closed
        bus.publish(*(Noted(n=n) for n in range(5)))
        bus.send(Job(n=1), Job(n=2), Job(n=-1))
        reply = bus.request(WhoAmI(n=7), timeout=30)
        assert reply.pid == os.getpid()
        assert reply.n == 7
        noted.wait(5, 30)
        jobs.wait(2, 30)
        noted.assert_exactly_once(range(5))

        with pytest.raises(pycomms.RemoteError, match="nope"):
            bus.request(Fail(why="nope"), timeout=30)
        with pytest.raises(TypeError):
            bus.publish(Job(n=3))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            bus.request(WhoAmI(n=1), timeout=0)

        [me] = [n for n in bus.nodes() if n.id == bus.node.id]
        assert me.name == "sync-test"
        assert set(me.services) == {"worker", "echo"}

        letters = bus.dead_letters("worker")
        while not letters:  # the rejected job is dead-lettered after its handler raised
            jobs.wait(2, 1)
            letters = bus.dead_letters("worker")
        [letter] = letters
        assert letter.type == "Job"
        assert "negative job -1" in letter.reason + (letter.error or "")
        assert bus.purge("worker", ids=[letter.id]) == 1
        assert bus.dead_letters("worker") == []
        assert bus.replay("worker") == 0
        jobs.assert_exactly_once([1, 2])
    assert bus.closed
    bus.close()  # idempotent
    with pytest.raises(pycomms.BusClosed):
        bus.publish(Noted(n=1))
    with pytest.raises(pycomms.BusClosed):
        bus.nodes()


def test_a_request_nobody_handles_times_out(redis_url: str) -> None:
    with pycomms.sync.connect(redis_url) as bus, pytest.raises(pycomms.RequestTimeout):
        bus.request(WhoAmI(n=1), timeout=0.5)


def test_a_bad_option_fails_in_the_calling_thread_and_leaves_no_thread() -> None:
    with pytest.raises(pycomms.ConfigError, match="no_such_option"):
        pycomms.sync.connect("memory://sync-bad?no_such_option=1")
    with pytest.raises(pycomms.BackendNotFound):
        pycomms.sync.connect("nosuchscheme://host")


def test_a_second_event_loop_on_one_memory_name_is_refused_naming_it() -> None:
    """A memory:// broker's buses share one event loop; a sync bus runs its own, so a
    second bus on the name from another loop is refused, until the first one closed."""
    with pycomms.sync.connect("memory://sync-one-loop") as first:
        assert first.nodes()
        with pytest.raises(pycomms.ConfigError, match=r"memory://sync-one-loop is already open on another event loop"):
            pycomms.sync.connect("memory://sync-one-loop")
        with pycomms.sync.connect("memory://sync-another-name") as other:  # another name: its own broker
            assert other.nodes()
    with pycomms.sync.connect("memory://sync-one-loop") as second:  # the first one closed
        assert [n.id for n in second.nodes()] == [second.node.id]


def test_many_threads_at_once_each_message_handled_once(url: str) -> None:
    threads, per_thread = 16, 25
    jobs = Counter()
    worker = Service("worker", concurrency=32)

    @worker.on
    def job(command: Job) -> None:
        jobs.add(command.n)

    errors: list[BaseException] = []
    replies: list[int] = []
    start = threading.Barrier(threads)

    with pycomms.sync.connect(url, services=[worker, echo_service()]) as bus:

        def client(t: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    n = t * per_thread + i
                    bus.send(Job(n=n))
                    if i % 5 == 0:
                        replies.append(bus.request(WhoAmI(n=n), timeout=60).n)
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert not errors, errors
        jobs.wait(threads * per_thread, 60)
    jobs.assert_exactly_once(range(threads * per_thread))
    assert sorted(replies) == [t * per_thread + i for t in range(threads) for i in range(0, per_thread, 5)]


def test_close_from_another_thread_ends_waiting_calls_with_bus_closed(redis_url: str) -> None:
    slow = Service("slow")
    entered = threading.Event()
    release = threading.Event()

    @slow.on
    def who(request: WhoAmI) -> None:
        entered.set()
        release.wait(30)

    bus = pycomms.sync.connect(redis_url, services=[slow])
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            bus.request(WhoAmI(n=1), timeout=60)
        except BaseException as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    assert entered.wait(30)
    closer = threading.Thread(target=bus.close, kwargs={"grace": 0.2})
    closer.start()
    asker.join(30)
    release.set()
    closer.join(30)
    assert not asker.is_alive()
    assert not closer.is_alive()
    [exc] = outcome
    assert isinstance(exc, pycomms.BusClosed), repr(exc)


def test_calling_the_bus_from_its_own_loop_is_refused(redis_url: str) -> None:
    holder: list[pycomms.sync.Bus] = []
    seen: list[BaseException] = []
    done = threading.Event()
    loopy = Service("loopy")

    @loopy.on
    async def note(event: Noted) -> None:
        try:
            holder[0].nodes()
        except RuntimeError as exc:
            seen.append(exc)
        done.set()

    with pycomms.sync.connect(redis_url, services=[loopy]) as bus:
        holder.append(bus)
        bus.publish(Noted(n=1))
        assert done.wait(30)
    [exc] = seen
    assert "ctx.publish" in str(exc)


def test_serve_returns_when_another_thread_closes_the_bus(redis_url: str) -> None:
    bus = pycomms.sync.connect(redis_url, services=[echo_service()])
    server = threading.Thread(target=bus.serve, kwargs={"handle_signals": False})
    server.start()
    assert bus.request(WhoAmI(n=3), timeout=30).n == 3
    bus.close(grace=1)
    server.join(30)
    assert not server.is_alive()
    with pytest.raises(pycomms.BusClosed):
        bus.serve()


def test_a_sync_handler_may_close_its_own_bus(redis_url: str) -> None:
    holder: list[pycomms.sync.Bus] = []
    closed = threading.Event()
    closer = Service("closer")

    @closer.on
    def shut(event: Noted) -> None:
        holder[0].close(grace=0.5)
        closed.set()

    bus = pycomms.sync.connect(redis_url, services=[closer])
    holder.append(bus)
    bus.publish(Noted(n=1))
    assert closed.wait(30), "close() from the bus's own handler thread did not return"
    assert bus.closed
    with pytest.raises(pycomms.BusClosed):
        bus.nodes()


def test_close_is_bounded_when_a_handler_ignores_its_cancellation(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    started = threading.Event()
    stubborn = Service("stubborn")

    @stubborn.on
    async def hold(command: Job) -> None:
        started.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass  # the bug under test: a handler that goes on after its cancellation

    bus = pycomms.sync.connect(redis_url, services=[stubborn])
    bus.send(Job(n=1))
    assert started.wait(30)
    closer = threading.Thread(target=bus.close, kwargs={"grace": 0.2}, daemon=True)
    closer.start()
    closer.join(60 * scale())  # about 0.2 s of grace, then the bounds of async and sync close
    assert not closer.is_alive(), "close() hangs on a handler that ignores its cancellation"
    assert bus.closed
    [abandoned] = [r.getMessage() for r in caplog.records if "at the end of their event loop" in r.getMessage()]
    assert abandoned.startswith("1 task(s) still run")
    assert abandoned.endswith("abandoning them: pycomms:stubborn:worker0")
