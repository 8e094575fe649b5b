"""The consumer of ``python -m bench.scaling``, run by ``pycomms run --workers N``.

Handles `BenchEvent` like the main harness's service, and reports what it handled to
the measuring process in `Tally` events: one per flush (every `FLUSH_EVERY` seconds or
`FLUSH_AT` events), so the report costs well under 1% of the traffic.
"""

from __future__ import annotations

import asyncio

from bench._messages import BenchEvent
from pycomms import Context, Event, Service

FLUSH_EVERY = 0.05  # seconds: the end of a run is seen at most this late
FLUSH_AT = 500


class Tally(Event, name="bench.tally"):
    seqs: list[int]


service = Service("bench", concurrency=64)
_pending: list[int] = []
_flushing: list[asyncio.TimerHandle] = []


@service.on(BenchEvent)
async def on_event(event: BenchEvent, ctx: Context) -> None:
    _pending.append(event.seq)
    if len(_pending) >= FLUSH_AT:
        await _flush(ctx)
    elif not _flushing:
        loop = asyncio.get_running_loop()
        _flushing.append(loop.call_later(FLUSH_EVERY, lambda: loop.create_task(_flush(ctx))))


async def _flush(ctx: Context) -> None:
    for timer in _flushing:
        timer.cancel()
    _flushing.clear()
    if _pending:
        seqs = _pending[:]
        _pending.clear()
        await ctx.publish(Tally(seqs=seqs))
