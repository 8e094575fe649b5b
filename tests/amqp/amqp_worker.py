"""A worker process for the crash test: handles `Job` by announcing it on stdout and then
hanging until it is killed. Run as ``python amqp_worker.py URL``."""

from __future__ import annotations

import asyncio
import sys

from amqp_messages import Job

import pycomms
from pycomms import Context, Service


async def main(url: str) -> None:
    victim = Service("victim", concurrency=1)

    @victim.on
    async def handle(job: Job, ctx: Context) -> None:
        print(f"started {job.n} {ctx.attempt}", flush=True)
        await asyncio.Event().wait()

    async with pycomms.connect(url, services=[victim]) as bus:
        print("ready", flush=True)
        await bus.serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
