"""Real OS processes on one host: discovery with no addresses configured, request/reply,
and a worker killed with SIGKILL whose unacknowledged messages go to another instance."""

from __future__ import annotations

import asyncio
import os

import pytest
from tcp_helpers import scale, start_worker, workers
from tcp_worker import Ask, Done, Echo, Job

import pycomms
from pycomms import Service
from pycomms.testing import eventually, run_strict

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(120)]


def test_two_processes_find_each_other_with_no_addresses(namespace: str) -> None:
    url = f"tcp://?namespace={namespace}"  # no host, no port, no seeds: same-host registry only

    async def scenario() -> None:
        async with workers("echo", url, 1) as [worker], pycomms.connect(url) as bus:
            reply = await bus.request(Ask(n=21), timeout=10 * scale())
            assert reply == Echo(n=42, pid=worker.pid)
            nodes = {n.id: n for n in await bus.nodes()}
            assert nodes[worker.node_id].pid == worker.pid
            assert nodes[worker.node_id].services == ("echo",)
            assert nodes[bus.node.id].pid == os.getpid()

    run_strict(scenario, 90)


def test_sigkilled_worker_loses_nothing(namespace: str) -> None:
    """Two worker processes share 600 jobs; one is SIGKILLed mid-way. Every job is
    done (duplicates allowed: at-least-once), the dead node leaves nodes() and a
    restarted worker joins again."""
    url = f"tcp://127.0.0.1:0?namespace={namespace}"
    total = 600

    async def scenario() -> None:
        done: dict[int, set[int]] = {}
        enough = asyncio.Event()
        finished = asyncio.Event()
        collector = Service("collector", concurrency=64)

        @collector.on
        async def on_done(msg: Done) -> None:
            done.setdefault(msg.n, set()).add(msg.pid)
            if len(done) >= 100:
                enough.set()
            if len(done) in (total, total + 20):
                finished.set()

        async with pycomms.connect(url, services=[collector]) as bus, workers("work", url, 2) as pair:
            victim, survivor = pair
            await bus.send(*(Job(n=i, sleep=0.02) for i in range(total)))
            async with asyncio.timeout(60 * scale()):
                await enough.wait()
            victim.kill()
            await victim.proc.wait()
            async with asyncio.timeout(60 * scale()):
                await finished.wait()
            assert set(done) == set(range(total))
            assert any(victim.pid in pids for pids in done.values()), "the victim handled nothing before the kill"
            after_kill = {n for n, pids in done.items() if pids == {survivor.pid}}
            assert after_kill, "the survivor took over nothing"

            async def ids() -> set[str]:
                return {n.id for n in await bus.nodes()}

            assert victim.node_id not in await ids(), "a SIGKILLed node must leave nodes() once its link drops"
            restarted = await start_worker("work", url)
            try:

                async def back() -> bool:
                    return restarted.node_id in await ids()

                await eventually(back, 10, "the restarted worker in nodes()")
                finished.clear()
                await bus.send(*(Job(n=total + i) for i in range(20)))
                async with asyncio.timeout(30 * scale()):
                    await finished.wait()
            finally:
                await restarted.stop()

    run_strict(scenario, 90)
