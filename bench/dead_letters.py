"""``python -m bench.dead_letters``: how long a backend takes to list and to replay many
dead letters of one service.

    python -m bench.dead_letters --url nats://127.0.0.1:4222 --letters 5000

A service whose handler always fails (one attempt) makes ``--letters`` dead letters from
as many events; then a bus without services lists them all (``dead_letters``) and
replays them all (``replay``, one call). The namespace is fresh and dropped afterwards.
Times are wall-clock seconds of one run, so compare runs of one invocation or of one
quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence

import pycomms
from pycomms import Event, Retry, Service
from pycomms.spi import redact_url


class Doomed(Event, name="bench.doomed"):
    n: int


async def run(url: str, letters: int) -> None:
    url = f"{url}{'&' if '?' in url else '?'}namespace=bdl{uuid.uuid4().hex[:8]}"
    service = Service("doomed", retry=Retry(max_attempts=1), concurrency=64)

    @service.on
    async def doomed(event: Doomed) -> None:
        raise RuntimeError("this handler always fails")

    async with (
        pycomms.connect(url, services=[service], name="bench-doomed"),
        pycomms.connect(url, name="bench-admin") as admin,
    ):
        started = time.perf_counter()
        for start in range(0, letters, 500):
            await admin.publish(*(Doomed(n=n) for n in range(start, min(letters, start + 500))))
        # the letters are the broker's (stored by the failing service): counted by polling
        while len(await admin.dead_letters("doomed", limit=letters)) < letters:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        print(f"  {letters} events dead-lettered in {time.perf_counter() - started:.2f}s", flush=True)
    async with pycomms.connect(url, name="bench-admin") as admin:
        started = time.perf_counter()
        listed = await admin.dead_letters("doomed", limit=letters)
        print(f"  dead_letters(): {len(listed)} listed in {time.perf_counter() - started:.2f}s", flush=True)
        started = time.perf_counter()
        replayed = await admin.replay("doomed")
        print(f"  replay(): {replayed} replayed in {time.perf_counter() - started:.2f}s", flush=True)
        await admin.drop_namespace(force=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dead_letters", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="a cross-process backend URL")
    p.add_argument("--letters", type=int, default=5_000)
    args = p.parse_args(argv)
    if args.letters < 1:
        p.error(f"--letters must be at least 1, got {args.letters}")
    print(f"bench.dead_letters {redact_url(args.url)}: {args.letters} letters", flush=True)
    asyncio.run(run(args.url, args.letters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
