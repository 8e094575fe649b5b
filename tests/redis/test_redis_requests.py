"""Request/reply under cancellation: replies go to the requesting node only, and a
reply to a cancelled request never reaches another caller."""

from __future__ import annotations

import asyncio
import random

from redis_support import url_for

import pycomms
from pycomms import Message, Request, Service
from pycomms.testing import Recorder, run_strict


class Answer(Message, name="requests.answer"):
    n: int
    caller: str


class Question(Request[Answer], name="requests.question"):
    n: int
    caller: str
    sleep: float = 0.0


def test_1000_cancelled_requests_no_reply_reaches_the_wrong_caller(namespace: str) -> None:
    url = url_for(namespace, aof_warning="false")
    rng = random.Random(5)

    async def scenario() -> None:
        handled = Recorder()
        svc = Service("answerer", concurrency=64)

        @svc.on
        async def answer(q: Question) -> Answer:
            await asyncio.sleep(q.sleep)
            handled.add(q.n)
            return Answer(n=q.n, caller=q.caller)

        async with (
            pycomms.connect(url, services=[svc]),
            pycomms.connect(url) as client_a,
            pycomms.connect(url) as client_b,
        ):
            clients = {"a": client_a, "b": client_b}
            wrong: list[str] = []
            answered = 0

            async def ask(n: int, caller: str) -> None:
                nonlocal answered
                sleep = rng.choice([0.0, 0.005, 0.02, 0.05])
                reply = await clients[caller].request(Question(n=n, caller=caller, sleep=sleep), timeout=30)
                if (reply.n, reply.caller) != (n, caller):
                    wrong.append(f"{caller}#{n} got {reply.caller}#{reply.n}")
                answered += 1

            # 1,000 requests cancelled at random moments in flight (most after the
            # answerer got them), interleaved with 1,000 that must get their own reply.
            loop = asyncio.get_running_loop()
            cancelled = [asyncio.create_task(ask(n, "ab"[n % 2])) for n in range(1000)]
            for task in cancelled:
                loop.call_later(rng.uniform(0.0, 0.15), task.cancel)
            kept = [asyncio.create_task(ask(n, "ab"[n % 2])) for n in range(1000, 2000)]
            results = await asyncio.gather(*cancelled, return_exceptions=True)
            await asyncio.gather(*kept)
            in_flight = sum(1 for n in range(1000) if handled.counts[n])
            assert sum(isinstance(r, asyncio.CancelledError) for r in results) >= 500
            assert in_flight >= 300, f"only {in_flight} cancelled requests had reached the answerer"
            # Late replies to the cancelled ones may still arrive; later requests stay correct.
            for n in range(2000, 2100):
                await ask(n, "ab"[n % 2])
            print(
                f"\n[measured] {in_flight} of 1000 cancelled requests had reached the answerer; "
                f"wrong replies: {len(wrong)}"
            )
            assert wrong == []
            assert answered >= 1100

    run_strict(scenario, 120)
