"""The driver node of the network-namespace fault tests:
``python tcp_fault_driver.py URL TOTAL WORKERS``.

Runs service "collector" (counts `Done` events), waits until WORKERS nodes run service
"work", sends TOTAL jobs at a steady pace, and reports on stdout, one line each:
``MESH``, ``SENT n``, ``JOIN id t`` / ``LEAVE id t`` (presence changes, UNIX time t),
then ``RESULT {json}`` once every job was done (or after a deadline), and goes on
reporting presence until SIGTERM, then prints ``FINAL {json}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time

from tcp_worker import Done, Job

import pycomms
from pycomms import Service
from pycomms.testing import eventually


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(url: str, total: int, workers: int) -> None:
    done: dict[int, int] = {}
    all_done = asyncio.Event()
    collector = Service("collector", concurrency=64)

    @collector.on
    async def on_done(msg: Done) -> None:
        done[msg.n] = done.get(msg.n, 0) + 1
        if len(done) == total:
            all_done.set()

    def say(*words: object) -> None:
        print(*words, flush=True)

    async with pycomms.connect(url, services=[collector], name="driver") as bus:
        say("READY", bus.node.id)

        async def meshed() -> bool:
            return sum("work" in n.services for n in await bus.nodes()) >= workers

        await eventually(meshed, 30, "the workers")
        say("MESH")

        async def watch() -> None:
            known = {n.id for n in await bus.nodes()}
            while True:
                await asyncio.sleep(0.05)
                now = {n.id for n in await bus.nodes()}
                for node_id in now - known:
                    say("JOIN", node_id, time.time())
                for node_id in known - now:
                    say("LEAVE", node_id, time.time())
                known = now

        watcher = asyncio.create_task(watch())
        rss_start = rss_kb()
        rss_peak = rss_start
        for i in range(total):
            await bus.send(Job(n=i, sleep=0.02))  # returned: the message is accepted ("acked" to the caller)
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # ~1,000 messages/s, so faults land mid-stream
                rss_peak = max(rss_peak, rss_kb())
            if i % 500 == 499:
                say("SENT", i + 1)
        deadline = time.monotonic() + float(os.environ.get("TCP_FAULT_WAIT", "90"))
        while not all_done.is_set() and time.monotonic() < deadline:
            rss_peak = max(rss_peak, rss_kb())
            try:
                async with asyncio.timeout(0.5):
                    await all_done.wait()
            except TimeoutError:
                pass

        def report() -> str:
            missing = sorted(set(range(total)) - set(done))
            return json.dumps(
                {
                    "sent": total,
                    "done": len(done),
                    "missing": missing[:20],
                    "missing_count": len(missing),
                    "duplicates": sum(c - 1 for c in done.values()),
                    "rss_start_kb": rss_start,
                    "rss_peak_kb": rss_peak,
                }
            )

        say("RESULT", report())
        await bus.serve()  # keep reporting presence until SIGTERM
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        say("FINAL", report())  # late arrivals (e.g. from a healed partition) counted too


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("TCP_WORKER_LOG", "WARNING"), stream=sys.stderr)
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
