"""Faults as tests: a private PostgreSQL cluster stopped with ``pg_ctl -m immediate``
and restarted mid-stream. No message whose publish returned is lost, and consumers
(and LISTEN) resume by themselves.

The cluster is created with ``initdb`` in a temporary directory on a free port and run
as the ``postgres`` user; the shared server is never touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_proxy import free_port
from system_tools import sbin_tool

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, eventually, run_strict, unavailable

pytestmark = pytest.mark.faults


class Tick(Event, name="sqltest.tick"):
    n: int


def _as_postgres(*args: str) -> list[str]:
    return [sbin_tool("runuser") or "runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.port = free_port()
        self.root = root

    def run(self, *args: str) -> None:
        subprocess.run(_as_postgres(*args), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.root / "log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop_immediately(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if shutil.which("pg_ctl") is None or shutil.which("initdb") is None:
        unavailable("pg_ctl/initdb are not installed")
    # Not under pytest's basetemp: the postgres user must be able to reach the directory.
    root = Path(tempfile.mkdtemp(prefix="pycomms-sql-pg-"))
    os.chmod(root, 0o777)
    cluster = Cluster(root)
    cluster.run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-N")
    cluster.start()
    try:
        yield cluster
    finally:
        subprocess.run(
            _as_postgres("pg_ctl", "-D", str(cluster.data), "-m", "immediate", "stop"), capture_output=True, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


def test_immediate_stop_and_restart_mid_stream(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pycomms.sql")
    total, stop_at = 300, 100
    url = f"{cluster.url}?namespace=restart&visibility_timeout=3&heartbeat=0.5"

    async def main() -> None:
        rec = Recorder()
        svc = Service("ticks", concurrency=8)

        @svc.on
        async def tick(event: Tick) -> None:
            rec.add(event.n)

        published: list[int] = []
        async with pycomms.connect(url, services=[svc]) as consumer, pycomms.connect(url) as pub:
            for n in range(total):
                if n == stop_at:
                    await asyncio.to_thread(cluster.stop_immediately)
                    await asyncio.to_thread(cluster.start)
                while True:
                    try:
                        await pub.publish(Tick(n=n))
                    except pycomms.PublishError:
                        await asyncio.sleep(0.1)  # the caller's retry: no promise was made for this try
                        continue
                    published.append(n)
                    break

            async def all_handled() -> bool:
                return set(published) <= set(rec.counts)

            await eventually(all_handled, 60, "every committed message to be handled after the restart")
            assert consumer.node.id in {node.id for node in await pub.nodes()}
        missing = set(published) - set(rec.counts)
        assert not missing, f"{len(missing)} committed messages lost, e.g. {sorted(missing)[:5]}"

    run_strict(main, 180)
    assert any("re-established" in r.getMessage() for r in caplog.records), "LISTEN did not come back by itself"
