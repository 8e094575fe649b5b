"""A soak consumer process: ``python sql_soak_worker.py URL CONSUMERS SEED``.

Runs CONSUMERS buses of the service ``soak``; each is closed with a short or zero
grace at random moments (cancelling handlers mid-flight) and reopened. Prints one line
per handler run: ``done|cancel N START END`` (monotonic clock, shared by the processes
of one machine). Stops gracefully when stdin closes.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import pycomms
from pycomms import Event, Service


class Item(Event, name="sqltest.item"):
    n: int


def make_service() -> Service:
    svc = Service("soak", concurrency=8)

    @svc.on
    async def handle(item: Item) -> None:
        start = time.monotonic()
        try:
            await asyncio.sleep(random.random() * 0.004)
        except asyncio.CancelledError:
            print(f"cancel {item.n} {start:.6f} {time.monotonic():.6f}", flush=True)
            raise
        print(f"done {item.n} {start:.6f} {time.monotonic():.6f}", flush=True)

    return svc


async def consumer(url: str, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        bus = await pycomms.connect(url, services=[make_service()])
        try:
            async with asyncio.timeout(rng.uniform(0.3, 1.5)):
                await stop.wait()
        except TimeoutError:
            await bus.close(grace=rng.choice([0.0, 0.0, 0.005, 0.05]))  # a random cancellation
            continue
        await bus.close(grace=10)


async def main(url: str, consumers: int, seed: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1024) else None)
    # The service's subscription is durable once recorded: events published after
    # "ready" are kept for it even while every consumer is between two buses.
    first = await pycomms.connect(url, services=[make_service()])
    await first.close()
    tasks = [asyncio.create_task(consumer(url, random.Random(seed * 100 + i), stop)) for i in range(consumers)]
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    loop.remove_reader(sys.stdin.fileno())
    print("exit", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
