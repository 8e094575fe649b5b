"""A worker process for the crash tests: serves service ``crashy`` whose handler says
``STARTED <n>`` and then hangs, until the test kills the process.

Usage: python nats_worker.py URL
"""

from __future__ import annotations

import asyncio
import sys

import pycomms
from pycomms import Command, Service


class Work(Command, name="natstest.work"):
    n: int


service = Service("crashy")


@service.on
async def work(job: Work) -> None:
    print(f"STARTED {job.n}", flush=True)
    await asyncio.Event().wait()


async def main(url: str) -> None:
    async with pycomms.connect(url, services=[service]) as bus:
        print("READY", flush=True)
        await bus.serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
