"""Drivers: run one workload against one implementation and measure it."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench._impl import BATCHES, Implementation, Publisher, Session
from bench._messages import BenchEvent
from bench._results import Latency, Throughput, percentile
from bench._tracker import Tracker

CLOSE_TIMEOUT = 15.0
SETUP_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes of one invocation (see ``python -m bench --help``)."""

    events: int = 20_000
    publishers: int = 64
    concurrency: int = 64
    requests: int = 2_000
    batch: int = 100
    warmup: int = 500
    timeout: float = 120.0


def describe(exc: BaseException) -> str:
    """A one-line account of a failure (the first leaf of an exception group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


async def publish_all(session: Publisher, events: Sequence[BenchEvent], publishers: int, batch: int) -> None:
    """``publishers`` tasks share ``events``; each awaits ``publish`` of ``batch`` at a time."""
    chunks = [events[i : i + batch] for i in range(0, len(events), batch)]

    async def publisher(mine: Sequence[Sequence[BenchEvent]]) -> None:
        for chunk in mine:
            await session.publish(chunk)

    async with asyncio.TaskGroup() as group:
        for index in range(min(publishers, len(chunks))):
            group.create_task(publisher(chunks[index::publishers]))


async def _open(
    impl: Implementation, tracker: Tracker, concurrency: int, result: Throughput | Latency
) -> Session | None:
    """Set an implementation up, bounded: an unresponsive broker must fail the run, not
    hang it. None, with ``result.error`` saying why, if it could not be set up."""
    try:
        async with asyncio.timeout(SETUP_TIMEOUT):
            return await impl.open(tracker, concurrency)
    except TimeoutError:
        result.error = f"set-up did not finish within {SETUP_TIMEOUT:.0f}s"
    except Exception as exc:
        result.error = f"set-up failed: {describe(exc)}"
    return None


async def _close(session: Session, result: Throughput | Latency) -> None:
    """Close, bounded; a run that succeeded fails if its close does."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await session.close()
    except Exception as exc:
        if result.ok:
            result.ok, result.error = False, f"close failed: {describe(exc)}"


async def run_throughput(
    impl: Implementation, workload: str, params: Params, events: Sequence[BenchEvent]
) -> Throughput:
    """Workload (a) (one event per publish) or (b) (``params.batch`` per publish)."""
    batch = params.batch if workload == BATCHES else 1
    result = Throughput(impl.name, workload, ok=False, count=len(events), batch=batch)
    tracker = Tracker()
    session = await _open(impl, tracker, params.concurrency, result)
    if session is None:
        return result
    try:
        if params.warmup:
            tracker.reset(min(params.warmup, len(events)))
            await publish_all(session, events[: tracker.expected], params.publishers, batch)
            if not await tracker.wait(params.timeout):
                result.error = f"warm-up: {tracker.unique} of {tracker.expected} handled within {params.timeout}s"
                return result
        tracker.reset(len(events))
        gc.collect()  # start every measured run with the same garbage: none left by earlier runs
        started_cpu = time.process_time()
        started = time.perf_counter()
        async with asyncio.timeout(params.timeout):
            await publish_all(session, events, params.publishers, batch)
        result.publish_s = time.perf_counter() - started
        if not await tracker.wait(max(0.0, params.timeout - result.publish_s)):
            result.error = f"lost messages: {tracker.unique} of {tracker.expected} handled within {params.timeout}s"
            return result
        result.elapsed_s = tracker.finished_at - started
        result.cpu_s = tracker.finished_cpu - started_cpu
        result.duplicates = tracker.duplicates
        if tracker.duplicates or tracker.strays:
            result.error = f"{tracker.duplicates} duplicate(s), {tracker.strays} unexpected message(s)"
            return result
        result.ok = True
    except TimeoutError:
        result.error = f"publishing did not finish within {params.timeout}s"
    except Exception as exc:
        result.error = describe(exc)
    finally:
        await _close(session, result)
    return result


async def run_latency(impl: Implementation, concurrency: int, params: Params) -> Latency:
    """Workload (c): ``params.requests`` round trips from ``concurrency`` tasks."""
    result = Latency(impl.name, f"requests-c{concurrency}", ok=False, concurrency=concurrency, count=params.requests)
    session = await _open(impl, Tracker(), max(params.concurrency, concurrency), result)
    if session is None:
        return result
    samples: list[float] = []

    async def caller(seqs: range) -> None:
        for seq in seqs:
            begun = time.perf_counter()
            await session.request(seq)
            samples.append(time.perf_counter() - begun)

    async def run(count: int) -> None:
        async with asyncio.TaskGroup() as group:
            for index in range(min(concurrency, count)):
                group.create_task(caller(range(index, count, concurrency)))

    try:
        async with asyncio.timeout(params.timeout):
            await run(min(params.requests, max(concurrency, params.warmup // 10)))
            samples.clear()
            gc.collect()
            started = time.perf_counter()
            await run(params.requests)
            result.elapsed_s = time.perf_counter() - started
        samples.sort()
        result.p50_us = percentile(samples, 0.50) * 1e6
        result.p99_us = percentile(samples, 0.99) * 1e6
        result.mean_us = sum(samples) / len(samples) * 1e6 if samples else 0.0
        result.ok = len(samples) == params.requests
        if not result.ok:
            result.error = f"{len(samples)} of {params.requests} requests answered"
    except TimeoutError:
        result.error = f"{len(samples)} of {params.requests} requests answered within {params.timeout}s"
    except Exception as exc:
        result.error = describe(exc)
    finally:
        await _close(session, result)
    return result
