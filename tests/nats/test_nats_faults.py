"""Faults on private nats-server processes (never the shared one), file storage:

- the server is killed (SIGKILL) and restarted during 10,000 publishes: nothing that
  ``publish()`` acknowledged is lost;
- a three-node JetStream cluster on loopback ports, streams with 3 replicas: the
  stream leader is killed during 10,000 publishes; nothing acknowledged is lost and the
  same publisher and consumer buses carry on (no restart).

Publishes go from 50 concurrent tasks; a publish that raised is not counted as
acknowledged (there were none in our runs). Duplicates are allowed here (at-least-once
across a crash), losses are not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats_support import PrivateNats, make_cluster

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, eventually, run_strict, scale

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

COUNT = 10_000
TASKS = 50


class Tick(Event, name="natsfault.tick"):
    n: int


def counting_service(rec: Recorder) -> Service:
    svc = Service("faulty", concurrency=64)

    @svc.on
    async def tick(m: Tick) -> None:
        rec.add(m.n)

    return svc


async def publish_all(bus: pycomms.Bus, acked: set[int], failed: list[str], progress: asyncio.Event) -> None:
    """Publish ``COUNT`` ticks from ``TASKS`` tasks; ``progress`` is set at a third."""

    async def task(t: int) -> None:
        for n in range(t, COUNT, TASKS):
            try:
                await bus.publish(Tick(n=n))
            except pycomms.PublishError as exc:
                failed.append(str(exc))
                continue
            acked.add(n)
            if len(acked) >= COUNT // 3:
                progress.set()

    await asyncio.gather(*(task(t) for t in range(TASKS)))


async def all_handled(rec: Recorder, acked: set[int]) -> None:
    """Until every acknowledged tick was handled (duplicates make counting totals wrong)."""

    async def done() -> bool:
        return acked <= rec.counts.keys()

    try:
        await eventually(done, 120, "every acknowledged message to be handled", interval=0.2)
    except AssertionError:
        pass  # the assertion below names what is missing


async def wait_for_jetstream(servers: str, timeout: float) -> None:
    """Until JetStream answers on ``servers`` (a cluster elects its meta leader first)."""
    end = time.monotonic() + timeout * scale()
    while True:
        try:
            nc = await nats.connect(servers, connect_timeout=2, max_reconnect_attempts=1)
            try:
                await nc.jetstream().account_info()
                return
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path)
    server.start()
    yield server
    server.stop()


def test_server_killed_and_restarted_during_publishes_loses_nothing_acknowledged(private_nats: PrivateNats) -> None:
    url = f"nats://{private_nats.address}?namespace=fault&operation_timeout=30&visibility_timeout=10"

    async def scenario() -> None:
        await wait_for_jetstream(f"nats://{private_nats.address}", 20)
        rec, acked, failed, progress = Recorder(), set[int](), list[str](), asyncio.Event()
        async with pycomms.connect(url, services=[counting_service(rec)]) as consumer, pycomms.connect(url) as pub:
            publishing = asyncio.create_task(publish_all(pub, acked, failed, progress))
            await progress.wait()
            private_nats.kill()
            killed_at = len(acked)
            await asyncio.sleep(0.5)  # down for a while, on purpose
            private_nats.start()
            await publishing
            assert killed_at < COUNT, "the kill came after the last publish"
            await all_handled(rec, acked)
            assert consumer.node.id
        lost = acked - set(rec.counts)
        print(f"restart: {len(acked)} acknowledged, killed after {killed_at}, {rec.total - len(rec.counts)} duplicates")
        assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {sorted(lost)[:10]}"
        assert not failed, failed[:3]

    run_strict(scenario, 220)


def test_cluster_stream_leader_killed_during_publishes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    servers = make_cluster(tmp_path)
    for server in servers:
        server.start()
    try:
        hosts = ",".join(server.address for server in servers)
        url = f"nats://{hosts}?namespace=cluster&replicas=3&operation_timeout=30&visibility_timeout=10"

        async def scenario() -> None:
            await wait_for_jetstream(f"nats://{servers[0].address}", 60)
            rec, acked, failed, progress = Recorder(), set[int](), list[str](), asyncio.Event()
            async with pycomms.connect(url, services=[counting_service(rec)]), pycomms.connect(url) as pub:
                nc = await nats.connect(f"nats://{servers[0].address}")
                info = await nc.jetstream().stream_info("PYCOMMS_cluster_EVENTS")
                await nc.close()
                assert info.cluster is not None
                assert info.config.num_replicas == 3
                leader = next(s for s, n in zip(servers, ("n0", "n1", "n2"), strict=True) if n == info.cluster.leader)
                publishing = asyncio.create_task(publish_all(pub, acked, failed, progress))
                await progress.wait()
                leader.kill()
                killed_at = len(acked)
                await publishing
                assert killed_at < COUNT, "the kill came after the last publish"
                await all_handled(rec, acked)
            lost = acked - set(rec.counts)
            print(
                f"cluster: {len(acked)} acknowledged, leader killed after {killed_at}, "
                f"{rec.total - len(rec.counts)} duplicates"
            )
            assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {sorted(lost)[:10]}"
            assert not failed, failed[:3]

        run_strict(scenario, 220)
    finally:
        for server in servers:
            server.stop()
