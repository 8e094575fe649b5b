"""A separate process for the fault tests: a node to SIGKILL.

    python redis_worker.py URL MODE

MODE ``hold``: serve service ``holders`` (concurrency 200) whose handler reports each
job on stdout ("held N") and then never finishes. MODE ``idle``: just be present
(prints "ready NODE_ID").
"""

from __future__ import annotations

import asyncio
import sys

import pycomms
from pycomms import Command, Service


class Hold(Command, name="faults.hold"):
    n: int


async def main(url: str, mode: str) -> None:
    services = []
    if mode == "hold":
        holders = Service("holders", concurrency=200)

        @holders.on
        async def hold(job: Hold) -> None:
            print(f"held {job.n}", flush=True)
            await asyncio.Event().wait()

        services.append(holders)
    bus = await pycomms.connect(url, services=services)
    print(f"ready {bus.node.id}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
