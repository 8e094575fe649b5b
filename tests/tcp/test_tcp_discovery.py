"""Discovery: the same-host registry (stale entries ignored), seeds plus gossip, and mDNS."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tcp_helpers import free_port, scale
from tcp_worker import Ask, Echo, Job

import pycomms
from pycomms import Service
from pycomms.testing import eventually, run_strict, unavailable

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(60)]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_registry_entries_are_ignored_and_removed(namespace: str, tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:0?namespace={namespace}&registry={tmp_path}"
    nodes_dir = tmp_path / namespace / "nodes"
    nodes_dir.mkdir(parents=True)
    stale = nodes_dir / "deadbeefdeadbeef.json"
    entry = {"id": "deadbeefdeadbeef", "host": "127.0.0.1", "port": free_port(), "pid": dead_pid()}
    stale.write_text(json.dumps(entry))

    async def scenario() -> None:
        async with pycomms.connect(url) as bus:
            assert [n.id for n in await bus.nodes()] == [bus.node.id]
            assert not stale.exists()
            assert (nodes_dir / f"{bus.node.id}.json").exists()
        assert not (nodes_dir / f"{bus.node.id}.json").exists(), "a closed node removes its registry entry"

    run_strict(scenario, 90)


def test_seeds_and_gossip_make_a_full_mesh(namespace: str) -> None:
    """B and C only know A's address; they learn each other from A's STATE."""
    port = free_port()
    seed = f"tcp://127.0.0.1:0?namespace={namespace}&discovery=off&seeds=127.0.0.1:{port}"
    handled: list[int] = []
    svc = Service("work")
    got_one = asyncio.Event()

    @svc.on
    async def job(msg: Job) -> None:
        handled.append(msg.n)
        got_one.set()

    async def scenario() -> None:
        async with (
            pycomms.connect(f"tcp://127.0.0.1:{port}?namespace={namespace}&discovery=off") as a,
            pycomms.connect(seed, services=[svc]) as b,
            pycomms.connect(seed) as c,
        ):
            everyone = {a.node.id, b.node.id, c.node.id}

            async def meshed() -> bool:
                views = [{n.id for n in await bus.nodes()} for bus in (a, b, c)]
                return all(view == everyone for view in views)

            await eventually(meshed, 10, "every node to see the other two")
            await c.send(Job(n=1))
            async with asyncio.timeout(10 * scale()):
                await got_one.wait()
        assert handled == [1]

    run_strict(scenario, 90)


def test_mdns_finds_nodes_with_same_host_discovery_off(namespace: str) -> None:
    if os.environ.get("PYCOMMS_TEST_NO_MDNS") == "1":
        unavailable("PYCOMMS_TEST_NO_MDNS=1: no multicast here")
    url = f"tcp://0.0.0.0:0?namespace={namespace}&discovery=off&mdns=true"
    svc = Service("echo")

    @svc.on
    async def ask(msg: Ask) -> Echo:
        return Echo(n=msg.n, pid=os.getpid())

    async def scenario() -> None:
        async with pycomms.connect(url, services=[svc]) as server, pycomms.connect(url) as client:

            async def found() -> bool:
                return server.node.id in {n.id for n in await client.nodes()}

            await eventually(found, 20, "mDNS to find the other node")
            assert await client.request(Ask(n=2), timeout=10 * scale()) == Echo(n=2, pid=os.getpid())

    run_strict(scenario, 90)
