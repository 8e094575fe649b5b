"""The conformance suite: the semantics every backend must show, as pytest tests.

A backend runs it by subclassing `ConformanceSuite` and saying how to build a URL::

    from pycomms.testing import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        def make_url(self, namespace: str) -> str:
            return f"mybackend://localhost?namespace={namespace}"

Deliveries are counted strictly: a duplicate in these fault-free scenarios fails.
Scenarios that need a capability the transport does not declare are skipped with
that reason; override a scenario only with an explicit, reasoned ``pytest.skip``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest

from .._bus import Bus, connect
from .._context import Context
from .._errors import BusClosed, NamespaceInUse, PublishError, Reject, RemoteError, RequestTimeout, RetryLater
from .._retry import Retry
from .._service import Service
from ._messages import Ask, Blob, Echo, Empty, Job, Keyed, Loose, Ping, Strict, numbered_types
from ._runner import Recorder, eventually, run_strict, scale

Scenario = Callable[["ConformanceSuite"], Awaitable[None]]
FAST_RETRY = Retry(max_attempts=3, delay=0.05, backoff=1.0, jitter=0.0)


def scenario(timeout: float = 60.0) -> Callable[[Scenario], Callable[[ConformanceSuite], None]]:
    """Turn an async scenario into a plain pytest test run by `run_strict`."""

    def decorate(func: Scenario) -> Callable[[ConformanceSuite], None]:
        def test(self: ConformanceSuite) -> None:
            run_strict(lambda: func(self), timeout)

        test.__name__ = func.__name__
        test.__qualname__ = func.__qualname__
        test.__doc__ = func.__doc__
        return test

    return decorate


class ConformanceSuite:
    """Subclass it, implement `make_url`, and pytest collects every scenario."""

    #: Seconds a backend may take to redeliver a message whose consumer went away
    #: without settling it (its visibility timeout, plus slack).
    redelivery_timeout: float = 30.0
    #: Seconds within which presence must show a joined node.
    presence_timeout: float = 10.0
    #: Seconds within which a cleanly closed node must be gone from presence.
    leave_timeout: float = 3.0
    #: Keyword options passed to every `pycomms.connect` of the suite.
    connect_options: ClassVar[dict[str, Any]] = {}

    namespace: str

    def make_url(self, namespace: str) -> str:
        """Return a URL for this backend isolated in ``namespace``."""
        raise NotImplementedError("a ConformanceSuite subclass implements make_url(namespace)")

    #: Drop every namespace a scenario used when it ends (`Bus.drop_namespace`), so a
    #: run leaves nothing on the broker; a failing drop fails the test.
    drop_namespaces: bool = True

    def setup_method(self, method: object) -> None:
        self.namespace = f"c{uuid.uuid4().hex[:12]}"
        self.used_namespaces: set[str] = set()

    def teardown_method(self, method: object) -> None:
        if not self.drop_namespaces:
            return
        for namespace in sorted(self.used_namespaces):
            run_strict(lambda ns=namespace: self._drop(ns), 60)  # type: ignore[misc]

    async def _drop(self, namespace: str) -> None:
        bus = await connect(self.make_url(namespace), **self.connect_options)
        await bus.drop_namespace(force=True)

    def connect(self, *services: Service, namespace: str | None = None, **options: Any) -> connect:
        self.used_namespaces.add(namespace or self.namespace)
        return connect(
            self.make_url(namespace or self.namespace),
            services=list(services),
            **{**self.connect_options, **options},
        )

    @staticmethod
    def require(bus: Bus, capability: str) -> None:
        if not getattr(bus.capabilities, capability):
            pytest.skip(f"the transport declares {capability}=False")

    # fidelity ----------------------------------------------------------------------

    @scenario()
    async def test_event_round_trip_fidelity(self) -> None:
        """Unicode, control characters, nested values and floats arrive unchanged."""
        rec = Recorder()
        svc = Service("fidelity")

        @svc.on(Ping)
        def handle(m: Ping) -> None:  # a sync handler, run in a thread
            rec.add(m.n, m)

        sent = Ping(
            n=1,
            text='héllo ✓ 日本語 🚀 \u0000 \n\t "quoted" \\ </script>',
            tags=["", "a b", "ß" * 3],
            nested={"pi": 3.141592653589793, "tiny": 5e-324, "neg": -0.0, "big": 1.7976931348623157e308},
        )
        async with self.connect(svc) as bus:
            await bus.publish(sent)
            await rec.wait(1, 10)
        assert rec.items == [sent]

    @scenario()
    async def test_empty_message(self) -> None:
        rec = Recorder()
        svc = Service("empty")

        @svc.on(Empty)
        async def handle(m: Empty) -> None:
            rec.add("empty", m)

        async with self.connect(svc) as bus:
            await bus.publish(Empty())
            await rec.wait(1, 10)
        assert rec.items == [Empty()]

    @scenario()
    async def test_message_near_size_limit(self) -> None:
        """A message just under the limit arrives intact; just over is refused before sending."""
        rec = Recorder()
        svc = Service("big")

        @svc.on(Blob)
        async def handle(m: Blob) -> None:
            rec.add(len(m.data), m)

        async with self.connect(svc) as bus:
            limit = 1024 * 1024
            near = Blob(data="x" * (limit - 1024))
            await bus.publish(near)
            with pytest.raises(PublishError, match="limit"):
                await bus.publish(Blob(data="y" * limit))
            await rec.wait(1, 30)
            await bus.publish(Blob(data="end"))
            await rec.wait(2, 30)
        assert rec.items == [near, Blob(data="end")]

    @scenario()
    async def test_headers_round_trip(self) -> None:
        rec = Recorder()
        svc = Service("headers")

        @svc.on(Ping)
        async def handle(m: Ping, ctx: Context) -> None:
            rec.add(m.n, dict(ctx.headers))

        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with self.connect(svc) as bus:
            await bus.publish(Ping(n=1), headers={"traceparent": trace, "x-ünï": "✓"})
            await rec.wait(1, 10)
        assert rec.items[0]["traceparent"] == trace
        assert rec.items[0]["x-ünï"] == "✓"

    # routing -----------------------------------------------------------------------

    @scenario()
    async def test_fan_out_one_copy_per_service(self) -> None:
        """An event reaches every service that handles it, once each."""
        recs = {name: Recorder() for name in ("fan-a", "fan-b", "fan-c")}
        services = []
        for name, rec in recs.items():
            svc = Service(name)
            svc.on(Ping)(_recording(rec))
            services.append(svc)
        async with self.connect(*services) as bus:
            await bus.publish(*(Ping(n=i) for i in range(20)))
            for rec in recs.values():
                await rec.wait(20, 20)
        for rec in recs.values():
            rec.assert_exactly_once(list(range(20)))

    @scenario()
    async def test_competing_consumers(self) -> None:
        """Two instances of one service share its messages: each handled by exactly one."""
        rec = Recorder()
        seen_by: dict[str, int] = {}

        def make_instance(tag: str) -> Service:
            svc = Service("workers", concurrency=4)

            @svc.on(Job)
            async def handle(m: Job) -> None:
                seen_by[tag] = seen_by.get(tag, 0) + 1
                rec.add(m.n)

            @svc.on(Ping)
            async def handle_event(m: Ping) -> None:
                seen_by[tag] = seen_by.get(tag, 0) + 1
                rec.add(1000 + m.n)

            return svc

        async with self.connect(make_instance("one")) as bus1, self.connect(make_instance("two")) as bus2:
            await bus1.send(*(Job(n=i) for i in range(40)))
            await bus2.publish(*(Ping(n=i) for i in range(40)))
            await rec.wait(80, 30)
        rec.assert_exactly_once([*range(40), *range(1000, 1040)])

    @scenario()
    async def test_command_goes_to_one_service_instance(self) -> None:
        rec = Recorder()
        handler_svc = Service("commands")
        handler_svc.on(Job)(_recording_job(rec))
        bystander = Service("bystander")
        bystander.on(Ping)(_recording(Recorder()))
        async with self.connect(handler_svc, bystander), self.connect() as sender:
            await sender.send(Job(n=1), Job(n=2))
            await rec.wait(2, 10)
            await sender.send(Job(n=3))
            await rec.wait(3, 10)
        rec.assert_exactly_once([1, 2, 3])

    @scenario()
    async def test_many_types_on_one_bus(self) -> None:
        events, commands = numbered_types(12)
        rec = Recorder()
        svc = Service("many")
        for cls in [*events, *commands]:
            svc.on(cls)(_recording_typed(rec))
        async with self.connect(svc) as bus:
            await bus.publish(*(cls(n=i) for i, cls in enumerate(events)))
            await bus.send(*(cls(n=i) for i, cls in enumerate(commands)))
            await rec.wait(24, 20)
        rec.assert_exactly_once(
            [(cls.type_name, i) for i, cls in enumerate(events)]
            + [(cls.type_name, i) for i, cls in enumerate(commands)]
        )

    @scenario()
    async def test_event_without_subscribers_is_accepted(self) -> None:
        async with self.connect() as bus:
            await bus.publish(Ping(n=1))
            await bus.send(Job(n=1))

    @scenario()
    async def test_kind_mismatch_is_a_type_error(self) -> None:
        async with self.connect() as bus:
            with pytest.raises(TypeError, match="publish"):
                await bus.publish(Job(n=1))  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="send"):
                await bus.send(Ping(n=1))  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await bus.send(Ask(n=1))  # type: ignore[arg-type]

    @scenario(timeout=90)
    async def test_parallel_publish_volume(self) -> None:
        """Many concurrent publishers, two services, one of them with two instances."""
        rec_a, rec_b = Recorder(), Recorder()

        def service_a() -> Service:
            svc = Service("volume-a", concurrency=32)
            svc.on(Ping)(_recording(rec_a))
            return svc

        svc_b = Service("volume-b", concurrency=32)
        svc_b.on(Ping)(_recording(rec_b))
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
        svc.on(Ping)(_recording(rec))
        async with self.connect(svc) as bus:
            await bus.publish(*(Ping(n=i) for i in range(200)))
            await rec.wait(200, 30)
        rec.assert_exactly_once(list(range(200)))

    @scenario()
    async def test_ordering_by_key(self) -> None:
        rec = Recorder()
        svc = Service("ordered", concurrency=1)

        @svc.on(Keyed)
        async def handle(m: Keyed) -> None:
            rec.add(m.n)

        async with self.connect(svc) as bus, self.connect() as pub:
            self.require(bus, "ordering")
            for i in range(50):
                await pub.publish(Keyed(n=i), key="k")
            await rec.wait(50, 20)
        assert rec.items == list(range(50))

    # request/reply -----------------------------------------------------------------

    @scenario()
    async def test_request_reply(self) -> None:
        svc = Service("answers")

        @svc.on
        async def answer(req: Ask, ctx: Context) -> Echo:
            return Echo(n=req.n * 2, text=req.text + "!")

        async with self.connect(svc) as server, self.connect() as client:
            reply = await client.request(Ask(n=21, text="hé"), timeout=10 * scale())
            assert reply == Echo(n=42, text="hé!")
            assert isinstance(reply, Echo)
            assert await server.request(Ask(n=1), timeout=10 * scale()) == Echo(n=2, text="!")

    @scenario()
    async def test_concurrent_requests_are_correlated(self) -> None:
        svc = Service("answers", concurrency=16)

        @svc.on
        async def answer(req: Ask) -> Echo:
            await asyncio.sleep(req.sleep)
            return Echo(n=req.n, text=req.text)

        async with self.connect(svc), self.connect() as c1, self.connect() as c2:

            async def ask(client: Bus, n: int) -> None:
                reply = await client.request(Ask(n=n, text=f"#{n}", sleep=(n % 5) * 0.01), timeout=20 * scale())
                assert reply == Echo(n=n, text=f"#{n}")

            await asyncio.gather(*(ask(c1 if n % 2 else c2, n) for n in range(60)))

    @scenario()
    async def test_request_timeout_when_nobody_handles(self) -> None:
        async with self.connect() as bus:
            started = time.monotonic()
            with pytest.raises(RequestTimeout):
                await bus.request(Ask(n=1), timeout=0.5)
            assert time.monotonic() - started < 0.5 + 5 * scale()
            with pytest.raises(TimeoutError):  # RequestTimeout is a TimeoutError
                await bus.request(Ask(n=2), timeout=0.2)

    @scenario()
    async def test_late_reply_does_not_leak_into_a_later_request(self) -> None:
        done_slow = asyncio.Event()
        svc = Service("slowpoke", concurrency=4)

        @svc.on
        async def answer(req: Ask) -> Echo:
            if req.sleep:
                await asyncio.sleep(req.sleep)
                done_slow.set()
            return Echo(n=req.n)

        async with self.connect(svc), self.connect() as client:
            with pytest.raises(RequestTimeout):
                await client.request(Ask(n=1, sleep=1.0), timeout=0.3)
            assert await client.request(Ask(n=2), timeout=10 * scale()) == Echo(n=2)
            async with asyncio.timeout(10 * scale()):
                await done_slow.wait()
            # the late reply to n=1 is on its way now; later requests must not see it
            for n in range(3, 8):
                assert await client.request(Ask(n=n), timeout=10 * scale()) == Echo(n=n)

    @scenario()
    async def test_failed_request_raises_remote_error(self) -> None:
        calls = Recorder()
        svc = Service("failing", retry=Retry(max_attempts=2, delay=0.05, jitter=0))

        @svc.on
        async def answer(req: Ask) -> Echo:
            calls.add(req.n)
            raise ValueError(f"cannot answer {req.n}")

        async with self.connect(svc), self.connect() as client:
            with pytest.raises(RemoteError, match="cannot answer 5"):
                await client.request(Ask(n=5), timeout=15 * scale())
        assert calls.counts[5] == 2

    # retries and dead letters ---------------------------------------------------------

    @scenario()
    async def test_attempt_counter(self) -> None:
        attempts: list[int] = []
        rec = Recorder()
        svc = Service("flaky", retry=Retry(max_attempts=4, delay=0.05, backoff=1.0, jitter=0))

        @svc.on
        async def handle(job: Job, ctx: Context) -> None:
            attempts.append(ctx.attempt)
            if ctx.attempt < 3:
                raise RuntimeError("not yet")
            rec.add(job.n)

        async with self.connect(svc) as bus:
            await bus.send(Job(n=1))
            await rec.wait(1, 20)
            assert await bus.dead_letters(svc) == []
        assert attempts == [1, 2, 3]

    @scenario()
    async def test_delayed_retry_does_not_block_the_consumer(self) -> None:
        """With one handler slot, a message waiting for its retry does not hold the slot."""
        order: list[tuple[int, int, float]] = []
        rec = Recorder()
        svc = Service("patient", concurrency=1, retry=Retry(max_attempts=2, delay=1.5, jitter=0))

        @svc.on
        async def handle(job: Job, ctx: Context) -> None:
            order.append((job.n, ctx.attempt, time.monotonic()))
            if job.n == 0 and ctx.attempt == 1:
                raise RuntimeError("first attempt fails")
            rec.add(job.n)

        async with self.connect(svc) as bus:
            await bus.send(Job(n=0))
            await bus.send(*(Job(n=i) for i in range(1, 6)))
            await rec.wait(6, 30)
        rec.assert_exactly_once(list(range(6)))
        first_fail = next(t for n, a, t in order if n == 0 and a == 1)
        retry_at = next(t for n, a, t in order if n == 0 and a == 2)
        others_done = max(t for n, a, t in order if n != 0)
        assert retry_at - first_fail >= 1.5 * 0.8, "the retry came before its delay"
        assert others_done < retry_at, f"other messages waited for the delayed retry: {order}"

    @scenario()
    async def test_poison_message_dead_lettered_after_max_attempts(self) -> None:
        calls = Recorder()
        svc = Service("poisoned", retry=FAST_RETRY)

        @svc.on
        async def handle(job: Job) -> None:
            calls.add(job.n)
            raise ValueError(f"boom {job.n}")

        async with self.connect(svc) as bus, self.connect() as pub:
            await pub.send(Job(n=7))
            letters = await _dead_letters(bus, svc.name, 1)
            await calls.wait(3, 10)
        assert calls.counts[7] == 3
        [letter] = letters
        assert letter.type == "conformance.job"
        assert letter.service == "poisoned"
        assert letter.reason == "failed"
        assert letter.attempts == 3
        assert "boom 7" in letter.error
        assert "ValueError" in letter.error
        assert letter.body == {"n": 7, "sleep": 0.0}
        assert letter.source == pub.node.id
        assert abs(letter.failed_at - time.time()) < 60

    @scenario()
    async def test_reject_goes_to_dead_letters_at_once(self) -> None:
        calls = Recorder()
        svc = Service("rejecting", retry=FAST_RETRY)

        @svc.on
        async def handle(job: Job) -> None:
            calls.add(job.n)
            raise Reject("not for us")

        async with self.connect(svc) as bus:
            await bus.send(Job(n=1))
            [letter] = await _dead_letters(bus, svc.name, 1)
        assert calls.counts[1] == 1
        assert (letter.reason, letter.attempts, letter.error) == ("rejected", 1, "not for us")

    @scenario()
    async def test_retry_later(self) -> None:
        attempts: list[int] = []
        rec = Recorder()
        svc = Service("later", retry=Retry(max_attempts=3, delay=60))

        @svc.on
        async def handle(job: Job, ctx: Context) -> None:
            attempts.append(ctx.attempt)
            if ctx.attempt == 1:
                raise RetryLater(0.2)
            rec.add(job.n)

        async with self.connect(svc) as bus:
            await bus.send(Job(n=1))
            await rec.wait(1, 20)
        assert attempts == [1, 2]

    @scenario()
    async def test_invalid_payload_dead_lettered_with_one_attempt(self) -> None:
        calls = Recorder()
        svc = Service("validating", retry=FAST_RETRY)

        @svc.on
        async def handle(m: Strict) -> None:
            calls.add(m.amount)

        async with self.connect(svc) as bus, self.connect() as pub:
            await pub.publish(Loose(amount="not a number"))  # same wire name, wrong body
            [letter] = await _dead_letters(bus, svc.name, 1)
            await pub.publish(Strict(amount=3))
            await calls.wait(1, 10)
        assert calls.items == [3]
        assert (letter.reason, letter.attempts, letter.type) == ("invalid", 1, "conformance.strict")
        assert "amount" in letter.error
        assert letter.body == {"amount": "not a number"}

    @scenario()
    async def test_replay_dead_letters(self) -> None:
        broken = True
        rec = Recorder()
        svc = Service("replayable", retry=FAST_RETRY)

        @svc.on
        async def handle(job: Job, ctx: Context) -> None:
            if broken:
                raise RuntimeError("broken")
            rec.add(job.n, ctx.attempt)

        async with self.connect(svc) as bus:
            await bus.send(Job(n=1), Job(n=2), Job(n=3))
            letters = await _dead_letters(bus, svc.name, 3)
            broken = False
            first = next(letter for letter in letters if letter.body["n"] == 1)
            assert await bus.replay(svc, ids=[first.id]) == 1
            await rec.wait(1, 20)
            assert rec.items == [1]  # replay starts again at attempt 1
            assert {letter.body["n"] for letter in await bus.dead_letters(svc)} == {2, 3}
            assert await bus.replay(svc.name) == 2
            await rec.wait(3, 20)
            assert await bus.dead_letters(svc) == []
            assert await bus.replay(svc) == 0
        rec.assert_exactly_once([1, 2, 3])

    @scenario()
    async def test_purge_dead_letters(self) -> None:
        svc = Service("purgeable")

        @svc.on
        async def handle(job: Job) -> None:
            raise Reject("no")

        async with self.connect(svc) as bus:
            await bus.send(*(Job(n=i) for i in range(5)))
            letters = await _dead_letters(bus, svc.name, 5)
            assert len(await bus.dead_letters(svc, limit=2)) == 2
            assert await bus.purge(svc, ids=[letters[0].id, "no-such-id"]) == 1
            remaining = await bus.dead_letters(svc)
            assert {letter.id for letter in remaining} == {letter.id for letter in letters[1:]}
            assert await bus.purge(svc) == 4
            assert await bus.dead_letters(svc) == []

    # concurrency and shutdown --------------------------------------------------------

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
            svc.on(Ping)(_recording(rec))
            svc.on(Job)(_recording_job(rec, offset=100))
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
            svc.on(Ping)(_recording(live))
            return svc

        keeper = Service("lasting")
        keeper.on(Ping)(_recording(lasting))
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

    # presence ------------------------------------------------------------------------

    @scenario()
    async def test_presence_lists_this_node(self) -> None:
        svc = Service("present")
        svc.on(Ping)(_recording(Recorder()))
        svc.on(Ask)(lambda req: Echo(n=req.n))
        async with self.connect(svc, name="conformance-node") as bus:
            me = next((n for n in await bus.nodes() if n.id == bus.node.id), None)
            assert me is not None, "nodes() must include the calling node"
            assert me.name == "conformance-node"
            assert me.services == ("present",)
            assert set(me.handles) == {"conformance.ping", "conformance.ask"}
            assert me.pid == os.getpid()
            assert me.host
            assert me.started_at <= me.last_seen <= time.time() + 5

    @scenario()
    async def test_presence_join_and_leave(self) -> None:
        async with self.connect() as watcher:
            other = await self.connect(Service("joiner"))
            other_id = other.node.id

            async def joined() -> bool:
                return any(n.id == other_id and n.services == ("joiner",) for n in await watcher.nodes())

            await eventually(joined, self.presence_timeout, "the new node in nodes()")
            await other.close()

            async def left() -> bool:
                return all(n.id != other_id for n in await watcher.nodes())

            await eventually(left, self.leave_timeout, "the closed node to leave nodes()")

    @scenario()
    async def test_namespace_isolation(self) -> None:
        rec_1, rec_2 = Recorder(), Recorder()
        svc_1, svc_2 = Service("isolated"), Service("isolated")
        svc_1.on(Ping)(_recording(rec_1))
        svc_2.on(Ping)(_recording(rec_2))
        other_ns = f"{self.namespace}x"
        async with self.connect(svc_1) as bus_1, self.connect(svc_2, namespace=other_ns) as bus_2:
            await bus_1.publish(*(Ping(n=i) for i in range(5)))
            await rec_1.wait(5, 10)
            await bus_2.publish(Ping(n=99))
            await rec_2.wait(1, 10)
            assert bus_2.node.id not in {n.id for n in await bus_1.nodes()}
            assert bus_1.node.id not in {n.id for n in await bus_2.nodes()}
        rec_1.assert_exactly_once(list(range(5)))
        rec_2.assert_exactly_once([99])

    @scenario()
    async def test_drop_namespace_leaves_nothing(self) -> None:
        """Dead letters and retained messages are gone after a drop; a present node
        refuses it unless forced; the namespace works again from empty."""
        svc = Service("droppable")

        @svc.on
        async def refuse(job: Job) -> None:
            raise Reject("no")

        async with self.connect(svc) as bus:
            await bus.send(Job(n=1), Job(n=2))
            await _dead_letters(bus, svc.name, 2)
            retained = bus.capabilities.retention
            presence = bus.capabilities.presence
        if retained:
            async with self.connect() as sender:
                await sender.send(Job(n=3))  # kept for the stopped service
        if presence:
            async with self.connect(Service("bystander")) as live:
                admin = await self.connect()
                try:
                    await eventually(lambda: _sees(admin, live.node.id), self.presence_timeout, "the bystander")
                    with pytest.raises(NamespaceInUse, match="in use by 1 node"):
                        await admin.drop_namespace()
                finally:
                    await admin.close()
        admin = await self.connect()
        assert await admin.drop_namespace() >= 1
        assert admin.closed
        rec = Recorder()
        fresh = Service("droppable")
        fresh.on(Job)(_recording_job(rec))
        async with self.connect(fresh) as bus:
            assert await bus.dead_letters(fresh) == []
            await bus.send(Job(n=10))
            await rec.wait(1, 10)
            await asyncio.sleep(0.2)  # a retained Job(n=3) that survived the drop would arrive with it
        rec.assert_exactly_once([10])

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


async def _dead_letters(bus: Bus, service: str, count: int, timeout: float = 20.0) -> list[Any]:
    """Wait until ``service`` has ``count`` dead letters and return them."""
    letters: list[Any] = []

    async def enough() -> bool:
        nonlocal letters
        letters = await bus.dead_letters(service)
        return len(letters) >= count

    await eventually(enough, timeout, f"{count} dead letter(s) in {service!r}")
    assert len(letters) == count, f"expected {count} dead letters, got {len(letters)}"
    return letters


async def _sees(bus: Bus, node_id: str) -> bool:
    return node_id in {node.id for node in await bus.nodes()}


def _recording(rec: Recorder) -> Callable[[Ping], Awaitable[None]]:
    async def handle(m: Ping) -> None:
        rec.add(m.n)

    return handle


def _recording_job(rec: Recorder, offset: int = 0) -> Callable[[Job], Awaitable[None]]:
    async def handle(job: Job) -> None:
        rec.add(job.n + offset)

    return handle


def _recording_typed(rec: Recorder) -> Callable[[Any], Awaitable[None]]:
    async def handle(m: Any) -> None:
        rec.add((m.type_name, m.n))

    return handle
