"""Request deadlines kept under one loop timer (`pycomms._requests._Deadlines`): every
request still ends at its own deadline, whatever order the deadlines come in, and the
entries of answered requests do not pile up."""

from __future__ import annotations

import asyncio
import random

import pycomms
from pycomms import Message, Request, RequestTimeout, Service
from pycomms.spi import new_id
from pycomms.testing import eventually, run_strict


class Answer(Message, name="deadlines.answer"):
    n: int


class Question(Request[Answer], name="deadlines.question"):
    n: int


class Unanswered(Request[Answer], name="deadlines.unanswered"):
    n: int


def url() -> str:
    return f"memory://deadlines?namespace=n{new_id()[-12:]}"


def test_a_shorter_deadline_asked_later_ends_first() -> None:
    """The timer set for the first (long) deadline is moved up for a later, shorter one."""

    async def scenario() -> None:
        async with pycomms.connect(url()) as bus:  # nobody handles Unanswered
            long = asyncio.create_task(bus.request(Unanswered(n=1), timeout=60))

            async def long_waits() -> bool:
                return bus._requests.pending == 1

            await eventually(long_waits, 10, "the long request to wait: its deadline is the timer's")
            try:
                await bus.request(Unanswered(n=2), timeout=0.05)
            except RequestTimeout:
                pass
            else:
                raise AssertionError("the short request got a reply nobody sends")
            assert not long.done()
            long.cancel()
            try:
                await long
            except asyncio.CancelledError:
                pass  # an outside cancel stays a cancel

    run_strict(scenario, 30)


def test_deadlines_in_any_order_each_end_their_request() -> None:
    async def scenario() -> None:
        timeouts = [0.01 + 0.01 * i for i in range(20)]
        random.Random(7).shuffle(timeouts)
        async with pycomms.connect(url()) as bus:
            results = await asyncio.gather(
                *(bus.request(Unanswered(n=i), timeout=t) for i, t in enumerate(timeouts)), return_exceptions=True
            )
            assert all(isinstance(r, RequestTimeout) for r in results), results
            assert bus._requests.pending == 0

    run_strict(scenario, 30)


def test_answered_requests_leave_no_deadlines_behind() -> None:
    """A request answered long before its deadline leaves an entry that is dropped when
    such entries outnumber the waiting requests: the heap stays small."""

    async def scenario() -> None:
        svc = Service("deadlines")

        @svc.on
        async def answer(question: Question) -> Answer:
            return Answer(n=question.n)

        async with pycomms.connect(url(), services=[svc]) as bus:
            for n in range(500):
                assert (await bus.request(Question(n=n), timeout=60)).n == n
            assert len(bus._requests._deadlines._heap) <= 65  # the bound of `_Deadlines.add` for 0 waiting
            try:  # the earliest deadline left behind does not hold the timer from a new one
                await bus.request(Unanswered(n=0), timeout=0.05)
            except RequestTimeout:
                pass
            else:
                raise AssertionError("an unanswered request got a reply")

    run_strict(scenario, 60)
