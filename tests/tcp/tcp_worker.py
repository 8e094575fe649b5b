"""A worker process for the tcp tests: ``python tcp_worker.py ROLE URL``.

Roles: ``work`` (service "work": handles `Job`, then publishes `Done`), ``echo``
(service "echo": answers `Ask`). Prints ``READY <node id>`` once connected, then
serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import pycomms
from pycomms import Command, Context, Event, Message, Request, Service


class Job(Command, name="tcptest.job"):
    n: int
    sleep: float = 0.0


class Done(Event, name="tcptest.done"):
    n: int
    pid: int


class Echo(Message, name="tcptest.echo"):
    n: int
    pid: int


class Ask(Request[Echo], name="tcptest.ask"):
    n: int


def work_service(concurrency: int = 8) -> Service:
    svc = Service("work", concurrency=concurrency)

    @svc.on
    async def job(msg: Job, ctx: Context) -> None:
        if msg.sleep:
            await asyncio.sleep(msg.sleep)
        await ctx.publish(Done(n=msg.n, pid=os.getpid()))

    return svc


def echo_service() -> Service:
    svc = Service("echo")

    @svc.on
    async def ask(msg: Ask) -> Echo:
        return Echo(n=msg.n * 2, pid=os.getpid())

    return svc


async def main(role: str, url: str | None) -> None:
    services = {"work": work_service, "echo": echo_service}[role]()
    async with pycomms.connect(url, services=[services], name=f"{role}-{os.getpid()}") as bus:
        print("READY", bus.node.id, flush=True)
        await bus.serve()


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("TCP_WORKER_LOG", "WARNING"), stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None))
