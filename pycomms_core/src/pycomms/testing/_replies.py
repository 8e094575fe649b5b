"""Request/reply: typed answers, correlation, timeouts, remote failures."""

from __future__ import annotations

import asyncio
import time

import pytest

from .._bus import Bus
from .._context import Context
from .._errors import RemoteError, RequestTimeout
from .._retry import Retry
from .._service import Service
from ._base import SuiteBase, scenario
from ._messages import Ask, Echo
from ._runner import Recorder, scale


class ReplyScenarios(SuiteBase):
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
