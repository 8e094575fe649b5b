"""The consumer of ``python -m bench.scaling``, run by ``pycomms run --workers N``.

Handles `BenchEvent` like the main harness's service, and reports what it handled to
the measuring process in `Tally` events: one per flush (every `FLUSH_EVERY` seconds or
`FLUSH_AT` events), so the report costs well under 1% of the traffic.

``$BENCH_GATE``, if set, is a file's path: handlers wait until that file exists, so the
measuring process can start the clock once every worker is up (their start-up, which
takes CPU from those already draining, stays outside the measure).

``$BENCH_WORK_US`` (default 0): microseconds of CPU work per event, done in the handler
on the event loop as a handler's own computation would be (``--work-us`` of
``python -m bench.scaling``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from bench._messages import BenchEvent
from pycomms import Context, Event, Service

FLUSH_EVERY = 0.1  # seconds: the end of a run is seen at most this late
FLUSH_AT = 2000  # few reports: the measuring process shares the cores it measures


class Tally(Event, name="bench.tally"):
    seqs: list[int]


WORK_S = int(os.environ.get("BENCH_WORK_US", "0")) / 1e6
GATE = os.environ.get("BENCH_GATE", "")
_gate: list[asyncio.Future[None]] = []  # opened by one poller for every waiting handler
service = Service("bench", concurrency=64)
_pending: list[int] = []
_reporter: list[asyncio.Task[None]] = []


@service.on(BenchEvent)
async def on_event(event: BenchEvent, ctx: Context) -> None:
    if GATE:
        if not _gate:
            _gate.append(asyncio.ensure_future(_await_gate()))
        if not _gate[0].done():
            await _gate[0]
    if WORK_S:
        busy(WORK_S)
    _pending.append(event.seq)
    if not _reporter:
        _reporter.append(asyncio.get_running_loop().create_task(_report(ctx)))


async def _await_gate() -> None:
    """Until the measuring process creates the file ``GATE`` (another process's file: polled)."""
    while not os.path.exists(GATE):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.005)


def busy(seconds: float) -> None:
    """Spend ``seconds`` of CPU (a handler's computation: the loop is held meanwhile)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def _report(ctx: Context) -> None:
    """Every `FLUSH_EVERY` seconds, or as soon as `FLUSH_AT` wait, one `Tally` of them;
    a failed publish keeps them for the next round, so no report is lost."""
    while True:
        for _ in range(10):
            if len(_pending) >= FLUSH_AT:
                break
            await asyncio.sleep(FLUSH_EVERY / 10)
        if not _pending:
            continue
        seqs = _pending[:]
        del _pending[: len(seqs)]
        try:
            await ctx.publish(Tally(seqs=seqs))
        except Exception as exc:
            print(f"tally not published ({exc}); kept for the next one", file=sys.stderr, flush=True)
            _pending[:0] = seqs
