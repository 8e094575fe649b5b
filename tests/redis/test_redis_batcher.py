"""Group commit (pure logic): every caller gets exactly its own results, batches respect
``max_batch``, a failure reaches exactly the callers of the failed batch."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycomms.testing import run_strict
from pycomms_redis._batcher import Batcher


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=40),
    max_batch=st.integers(min_value=1, max_value=20),
)
def test_each_caller_gets_its_own_results(sizes: list[int], max_batch: int) -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        await asyncio.sleep(0)
        return [item * 10 for item in items]

    async def scenario() -> None:
        batcher: Batcher[int, int] = Batcher(flush, max_batch, "test")
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        calls = [batcher.submit(list(range(start, start + size))) for start, size in zip(starts, sizes, strict=True)]
        results = await asyncio.gather(*calls)
        for start, size, result in zip(starts, sizes, results, strict=True):
            assert result == [10 * i for i in range(start, start + size)]
        assert await batcher.close(1.0, RuntimeError)

    run_strict(scenario, 10)
    assert sorted(i for batch in flushed for i in batch) == list(range(sum(sizes)))
    for batch in flushed:
        assert len(batch) <= max(max_batch, max(sizes))


def test_a_failed_flush_fails_only_its_callers() -> None:
    async def flush(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if 13 in items:
            raise ConnectionError("lost")
        return items

    async def scenario() -> None:
        batcher: Batcher[int, int] = Batcher(flush, 1, "test")
        ok, bad, later = await asyncio.gather(
            batcher.submit([1]), batcher.submit([13]), batcher.submit([2]), return_exceptions=True
        )
        assert ok == [1]
        assert isinstance(bad, ConnectionError)
        assert later == [2]

    run_strict(scenario, 10)


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    gate = asyncio.Event

    async def scenario() -> None:
        release = gate()

        async def flush(items: list[int]) -> list[int]:
            await release.wait()
            return items

        batcher: Batcher[int, int] = Batcher(flush, 100, "test")
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(batcher.submit([2]))
        cancelled = asyncio.create_task(batcher.submit([3]))
        await asyncio.sleep(0)
        cancelled.cancel()
        release.set()
        assert await first == [1]
        assert await waiting == [2]
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await batcher.close(1.0, RuntimeError)

    run_strict(scenario, 10)


def test_close_abandons_a_stuck_flush_and_fails_its_callers() -> None:
    async def scenario() -> None:
        async def flush(items: list[int]) -> list[int]:
            await asyncio.Event().wait()  # a server that never answers
            return items

        batcher: Batcher[int, int] = Batcher(flush, 1, "test")
        in_flight = asyncio.create_task(batcher.submit([1]))
        queued = asyncio.create_task(batcher.submit([2]))
        await asyncio.sleep(0)
        assert not await batcher.close(0.05, lambda: TimeoutError("abandoned at close"))
        for caller in (in_flight, queued):
            with pytest.raises(TimeoutError, match="abandoned at close"):
                await caller

    run_strict(scenario, 10)
