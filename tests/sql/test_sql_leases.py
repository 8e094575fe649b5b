"""Leases: a stale ack settles nothing, a live slow handler keeps its message, and an
expired lease makes the message claimable again as the next attempt.

These drive the transport through the SPI (`pycomms.spi`) to control timing exactly.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sql_helpers import with_options

import pycomms
from pycomms import Command, Service
from pycomms.spi import BackendConfig, Envelope, NodeInfo, Subscription, new_id
from pycomms.testing import Recorder, run_strict
from pycomms_sql import SqlTransport


class Slow(Command, name="sqltest.slow"):
    n: int
    sleep: float = 0.0


def _transport(url: str, **options: object) -> SqlTransport:
    base, _, query = url.partition("?")
    pairs = dict(item.split("=", 1) for item in query.split("&") if item)
    namespace = pairs.pop("namespace")
    scheme = base.split(":", 1)[0]
    return SqlTransport(BackendConfig(url=base, scheme=scheme, namespace=namespace, options={**pairs, **options}))


def _node() -> NodeInfo:
    return NodeInfo(id=uuid.uuid4().hex[:16], name="lease-test", started_at=time.time(), last_seen=time.time())


def _command(n: int) -> Envelope:
    return Envelope(id=new_id(), type="sqltest.slow", kind="command", source="test", body={"n": n}, time=time.time())


SUB = Subscription(service="leases", events=frozenset(), commands=frozenset({"sqltest.slow"}), concurrency=4)


def test_stale_ack_settles_nothing(url: str) -> None:
    async def main() -> None:
        first, second = _transport(url, visibility_timeout=0.5), _transport(url, visibility_timeout=30)
        await first.open(_node(), lambda data: None)
        await second.open(_node(), lambda data: None)
        try:
            r1 = await first.subscribe(SUB)
            await first.publish([_command(1)])
            [stale] = await r1.receive(4)
            assert stale.attempt == 1
            # The first holder stalls (as in a long GC pause or a frozen VM): no renewals.
            r1._renewer.cancel()
            r2 = await second.subscribe(SUB)
            async with asyncio.timeout(20):
                [fresh] = await r2.receive(4)  # after the 0.5 s lease of the first claim ran out
            assert fresh.data == stale.data
            assert fresh.attempt == 2
            await stale.ack()  # too late: must not remove the second instance's delivery
            await fresh.retry(0)
            async with asyncio.timeout(20):
                [again] = await r2.receive(4)
            assert again.attempt == 3, "the stale ack settled someone else's delivery"
            await again.ack()
            await r1.close()
            await r2.close()
        finally:
            await first.close()
            await second.close()

    run_strict(main, 60)


def test_live_slow_handler_keeps_its_lease(url: str) -> None:
    """A handler three times longer than the visibility timeout, with a second
    instance waiting: the message is handled once (leases are renewed)."""

    async def main() -> None:
        rec = Recorder()

        def make() -> Service:
            svc = Service("slowpoke", concurrency=2)

            @svc.on
            async def handle(job: Slow, ctx: pycomms.Context) -> None:
                rec.add((job.n, ctx.attempt))
                await asyncio.sleep(job.sleep)

            return svc

        fast_leases = with_options(url, visibility_timeout=1.0)
        async with pycomms.connect(fast_leases, services=[make()]) as one, pycomms.connect(fast_leases) as pub:
            await pub.send(Slow(n=1, sleep=3.0))
            await rec.wait(1, 20)
            async with pycomms.connect(fast_leases, services=[make()]):
                await pub.send(Slow(n=2))
                await rec.wait(2, 20)
                await one.close(grace=10)  # returns once the slow handler finished and acked
        rec.assert_exactly_once([(1, 1), (2, 1)])

    run_strict(main, 60)


@pytest.mark.parametrize("engine_url", ["postgresql", "mariadb"], indirect=True)
def test_concurrent_first_starts_create_the_schema_once(url: str) -> None:
    async def main() -> None:
        buses = await asyncio.gather(*(pycomms.connect(url) for _ in range(6)))
        try:
            nodes = await buses[0].nodes()
            assert {b.node.id for b in buses} <= {n.id for n in nodes}
        finally:
            await asyncio.gather(*(b.close() for b in buses))

    run_strict(main, 60)
