"""Fault tests across hosts made with network namespaces: three nodes, each in its own
namespace, linked through a bridge in a fourth one. Needs root and iproute2.

- a worker is SIGKILLed mid-stream and restarted: membership is back within 10 s and
  no accepted message is lost;
- a worker is cut off for 20 s (its link to the bridge is down: every packet to and
  from it is dropped, both ways), then healed: no accepted message is lost, and the
  sender's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tcp_helpers import scale

from pycomms.testing import run_strict, unavailable

pytestmark = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]
HERE = Path(__file__).parent
PORT = 7700
TOTAL = 5000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Hosts:
    """Three network namespaces on one bridge: 10.213.0.1, .2 and .3."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.hub = f"pyc{tag}h"
        self.names = [f"pyc{tag}{i}" for i in (1, 2, 3)]
        self.addrs = [f"10.213.0.{i}" for i in (1, 2, 3)]

    def up(self) -> None:
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for i, (name, addr) in enumerate(zip(self.names, self.addrs, strict=True), 1):
            ip("netns", "add", name)
            ip("-n", self.hub, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("-n", self.hub, "link", "set", f"v{i}", "master", "br0", "up")
            ip("-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")

    def down(self) -> None:
        for name in [*self.names, self.hub]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def cut(self, index: int, connected: bool) -> str:
        """Drop every packet to and from node ``index`` (or stop doing so): iptables DROP
        both ways in its namespace when iptables works, else its bridge port down."""
        name = self.names[index]
        if shutil.which("iptables") is not None:
            verb = "-D" if connected else "-A"
            rules = [["INPUT", "-i", "eth0", "-j", "DROP"], ["OUTPUT", "-o", "eth0", "-j", "DROP"]]
            try:
                for rule in rules:
                    ip("netns", "exec", name, "iptables", verb, *rule)
                return "iptables DROP"
            except subprocess.CalledProcessError:
                if not connected:
                    for rule in rules:  # undo a half-applied cut before falling back
                        subprocess.run(["ip", "netns", "exec", name, "iptables", "-D", *rule], capture_output=True)
        ip("-n", self.hub, "link", "set", f"v{index + 1}", "up" if connected else "down")
        return "bridge port down"

    def url(self, index: int, namespace: str) -> str:
        seeds = ",".join(f"{a}:{PORT}" for a in self.addrs)
        return f"tcp://{self.addrs[index]}:{PORT}?namespace={namespace}&discovery=off&seeds={seeds}&heartbeat=0.5"


@contextmanager
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        unavailable("needs root and iproute2 (ip netns)")
    made = Hosts()
    try:
        made.up()
    except subprocess.CalledProcessError as exc:
        made.down()
        unavailable(f"cannot create network namespaces here: {exc.stderr.decode().strip()}")
    try:
        yield made
    finally:
        made.down()


async def spawn(host: str, script: str, *args: str) -> Output:
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        host,
        sys.executable,
        str(HERE / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
    )
    return Output(proc)


class Output:
    """Every stdout line of a process, collected in the background, searchable at any time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._more = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append(raw.decode().strip())
            self._more.set()
        self._more.set()

    async def find(self, prefix: str, timeout: float = 30.0) -> str:
        async with asyncio.timeout(timeout * scale()):
            seen = 0
            while True:
                for text in self.lines[seen:]:
                    if text.startswith(prefix):
                        return text
                seen = len(self.lines)
                if self._task.done():
                    raise AssertionError(f"process exited before printing {prefix!r}")
                self._more.clear()
                await self._more.wait()

    async def close(self) -> None:
        await self._task


async def stop(*outputs: Output) -> None:
    procs = [out.proc for out in outputs]
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    for out in outputs:
        await out.close()


def test_sigkill_and_restart_across_hosts(namespace: str) -> None:
    async def scenario(net: Hosts) -> None:
        workers = [await spawn(net.names[i], "tcp_worker.py", "work", net.url(i, namespace)) for i in (1, 2)]
        driver: Output | None = None
        try:
            for out in workers:
                await out.find("READY")
            driver = await spawn(net.names[0], "tcp_fault_driver.py", net.url(0, namespace), str(TOTAL), "2")
            await driver.find("MESH")
            await driver.find("SENT 1500")
            workers[0].proc.kill()
            await workers[0].proc.wait()
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            workers[0] = await spawn(net.names[1], "tcp_worker.py", "work", net.url(1, namespace))
            restarted_id = (await workers[0].find("READY")).split()[1]
            await driver.find(f"JOIN {restarted_id}", timeout=30)
            joined_after = loop.time() - killed_at
            assert joined_after < 10, "membership must be back within 10 s of the kill"
            result = json.loads((await driver.find("RESULT", timeout=120)).split(" ", 1)[1])
            print("sigkill:", result, f"rejoined {joined_after:.2f}s after the kill")
            assert result["missing_count"] == 0, result
            assert result["done"] == TOTAL
        finally:
            await stop(*workers, *([driver] if driver else []))

    with hosts() as net:
        run_strict(lambda: scenario(net), 200)


def test_partition_heals_without_loss(namespace: str) -> None:
    async def scenario(net: Hosts) -> None:
        workers = [await spawn(net.names[i], "tcp_worker.py", "work", net.url(i, namespace)) for i in (1, 2)]
        driver: Output | None = None
        how = "?"
        try:
            ids = [(await out.find("READY")).split()[1] for out in workers]
            driver = await spawn(net.names[0], "tcp_fault_driver.py", net.url(0, namespace), str(TOTAL), "2")
            await driver.find("MESH")
            await driver.find("SENT 1000")
            loop = asyncio.get_running_loop()
            cut_at = loop.time()
            how = net.cut(2, connected=False)  # node 3: every packet to and from it dropped
            await driver.find(f"LEAVE {ids[1]}", timeout=10)  # silent link: gone after 3 heartbeats
            await asyncio.sleep(20 - (loop.time() - cut_at))  # the fault's duration is the point of the test
            net.cut(2, connected=True)
            await driver.find(f"JOIN {ids[1]}", timeout=15)  # dialled again by its last known address
            result = json.loads((await driver.find("RESULT", timeout=150)).split(" ", 1)[1])
            assert result["missing_count"] == 0, result
            assert result["rss_peak_kb"] - result["rss_start_kb"] < 200_000, result
        finally:
            await stop(*workers, *([driver] if driver else []))
        if driver is not None:
            print(f"partition ({how}):", await driver.find("FINAL", timeout=1))

    with hosts() as net:
        run_strict(lambda: scenario(net), 200)
