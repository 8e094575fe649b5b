"""A consumer process for the fault tests: ``python sql_worker.py URL SERVICE``.

Prints ``ready NODE_ID`` once open, then ``started N ATTEMPT`` / ``done N ATTEMPT`` per
job; a job with ``hang=true`` never finishes (the test kills the process).
"""

from __future__ import annotations

import asyncio
import sys

import pycomms
from pycomms import Command, Context, Service


class Job(Command, name="sqltest.job"):
    n: int
    hang: bool = False
    sleep: float = 0.0


async def main(url: str, service: str) -> None:
    svc = Service(service, concurrency=4)

    @svc.on
    async def handle(job: Job, ctx: Context) -> None:
        print(f"started {job.n} {ctx.attempt}", flush=True)
        if job.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(job.sleep)
        print(f"done {job.n} {ctx.attempt}", flush=True)

    async with pycomms.connect(url, services=[svc]) as bus:
        print(f"ready {bus.node.id}", flush=True)
        await bus.serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
