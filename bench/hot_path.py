"""The core's hot path on memory://, alone: N events end to end, or N request/reply round trips.

The harness's workloads in miniature: ``--publishers`` tasks publish ``--batch`` events
at a time on a client bus (``--batch 1`` is workload (a), the default 100 is (b)), one
service (concurrency ``--concurrency``) handles them on a server bus; or ``--requests``
round trips from ``--concurrency`` callers (``--concurrency 1``: (c) at concurrency 1).
Nothing is timed: it is for an instruction counter (repeatable on a busy machine) or a
profiler. Count a run without messages and one with N, and divide the difference by N, so
setup and teardown cancel (docs/figures.md, "the core hot path"):

    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python -m bench.hot_path                 # I0: setup and teardown only
    (the same with --events 5000)   # instructions per event = (I1 - I0) / 5000

    .venv/bin/python -m bench.hot_path --requests 5000 --profile   # where the time goes

The sum of ``Ir`` over the callgrind output files of one run is its instruction count
(``callgrind_annotate FILE | head``). The url defaults to ``memory://hotpath``; any
other url works the same way (tcp:// needs its server running). On tcp:// add
``&heartbeat=60`` to the url when counting: a run's heartbeats and link checks grow with
its wall time, which valgrind and a busy machine stretch (±15,000 instructions per round
trip between single runs with the default ``heartbeat=1``); count before and after side
by side.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys

import pycomms
from bench._messages import BenchEvent, Ping, Pong, make_events
from pycomms import Service


async def run(url: str, events: int, requests: int, publishers: int, batch: int, concurrency: int) -> None:
    """Publish ``events`` events and/or make ``requests`` round trips; return when all are handled."""
    service = Service("hotpath", concurrency=concurrency)
    handled = 0
    done = asyncio.Event()

    @service.on(BenchEvent)
    async def on_event(event: BenchEvent) -> None:
        nonlocal handled
        handled += 1
        if handled == events:
            done.set()

    @service.on(Ping)
    async def on_ping(ping: Ping) -> Pong:
        return Pong(seq=ping.seq)

    async with (
        pycomms.connect(url, services=[service], name="hotpath-server") as server,
        pycomms.connect(url, name="hotpath-client") as client,
    ):
        del server
        if events:
            # the same event objects every time: building them is the caller's cost, not the core's
            full = make_events(batch)
            chunks = [full[: min(batch, events - i)] for i in range(0, events, batch)]

            async def publisher(mine: list[list[BenchEvent]]) -> None:
                for chunk in mine:
                    await client.publish(*chunk)

            async with asyncio.TaskGroup() as group:
                for index in range(min(publishers, len(chunks))):
                    group.create_task(publisher(chunks[index::publishers]))
            await asyncio.wait_for(done.wait(), timeout=600)

        async def caller(seqs: range) -> None:
            for seq in seqs:
                reply = await client.request(Ping(seq=seq), timeout=60)
                if reply.seq != seq:
                    raise AssertionError(f"request {seq} got the reply to {reply.seq}")

        async with asyncio.TaskGroup() as group:
            for index in range(min(concurrency, requests)):
                group.create_task(caller(range(index, requests, concurrency)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_path", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://hotpath")
    parser.add_argument("--events", type=int, default=0, help="events to publish and handle")
    parser.add_argument("--requests", type=int, default=0, help="request/reply round trips")
    parser.add_argument("--publishers", type=int, default=64, help="concurrent publisher tasks (default 64)")
    parser.add_argument("--batch", type=int, default=100, help="events per publish call (default 100: (b); 1: (a))")
    parser.add_argument("--concurrency", type=int, default=64, help="handler concurrency and request callers")
    parser.add_argument("--profile", action="store_true", help="run under cProfile and print the top functions")
    args = parser.parse_args(argv)
    if args.events < 0 or args.requests < 0 or args.batch < 1 or args.publishers < 1 or args.concurrency < 1:
        parser.error("--events and --requests must be >= 0; --batch, --publishers and --concurrency >= 1")
    work = run(args.url, args.events, args.requests, args.publishers, args.batch, args.concurrency)
    if not args.profile:
        asyncio.run(work)
        return 0
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(work)
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(35)
    return 0


if __name__ == "__main__":
    sys.exit(main())
