"""A worker process for the crash test: ``python mqtt_worker.py URL block|work``.

Service ``crashy`` handles `Job`; it prints ``ready``, then ``handling N`` when a job
starts and ``done N ATTEMPT`` when it finishes. With ``block`` every handler waits
forever (the test SIGKILLs the process there)."""

from __future__ import annotations

import asyncio
import sys

import pycomms
from pycomms import Command, Context, Service


class Job(Command, name="mqtt_crash.job"):
    n: int


async def main(url: str, mode: str) -> None:
    svc = Service("crashy", concurrency=4)

    @svc.on
    async def handle(job: Job, ctx: Context) -> None:
        print(f"handling {job.n}", flush=True)
        if mode == "block":
            await asyncio.Event().wait()
        print(f"done {job.n} {ctx.attempt}", flush=True)

    async with pycomms.connect(url, services=[svc], name=f"crashy-{mode}") as bus:
        print("ready", flush=True)
        await bus.serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
