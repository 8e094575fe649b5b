"""Failures and dead letters: attempts, delayed retries, reject, replay, purge."""

from __future__ import annotations

import time

from .._context import Context
from .._errors import Reject, RetryLater
from .._retry import Retry
from .._service import Service
from ._base import FAST_RETRY, SuiteBase, dead_letters_of, scenario
from ._messages import Job, Loose, Strict
from ._runner import Recorder


class FailureScenarios(SuiteBase):
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
            letters = await dead_letters_of(bus, svc.name, 1)
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
            [letter] = await dead_letters_of(bus, svc.name, 1)
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
            [letter] = await dead_letters_of(bus, svc.name, 1)
            await pub.publish(Strict(amount=3))
            await calls.wait(1, 10)
        assert calls.items == [3]
        assert (letter.reason, letter.attempts, letter.type) == ("invalid", 1, "conformance.strict")
        assert "amount" in letter.error
        assert letter.body == {"amount": "not a number"}

    @scenario()
    async def test_replaydead_letters_of(self) -> None:
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
            letters = await dead_letters_of(bus, svc.name, 3)
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
    async def test_purgedead_letters_of(self) -> None:
        svc = Service("purgeable")

        @svc.on
        async def handle(job: Job) -> None:
            raise Reject("no")

        async with self.connect(svc) as bus:
            await bus.send(*(Job(n=i) for i in range(5)))
            letters = await dead_letters_of(bus, svc.name, 5)
            assert len(await bus.dead_letters(svc, limit=2)) == 2
            assert await bus.purge(svc, ids=[letters[0].id, "no-such-id"]) == 1
            remaining = await bus.dead_letters(svc)
            assert {letter.id for letter in remaining} == {letter.id for letter in letters[1:]}
            assert await bus.purge(svc) == 4
            assert await bus.dead_letters(svc) == []
