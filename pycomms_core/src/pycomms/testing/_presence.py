"""Presence and namespaces: who is up, isolation, dropping a namespace."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from .._errors import NamespaceInUse, Reject
from .._service import Service
from ._base import SuiteBase, dead_letters_of, recording, recording_job, scenario, sees
from ._messages import Ask, Echo, Job, Ping
from ._runner import Recorder, eventually


class PresenceScenarios(SuiteBase):
    # presence ------------------------------------------------------------------------

    @scenario()
    async def test_presence_lists_this_node(self) -> None:
        svc = Service("present")
        svc.on(Ping)(recording(Recorder()))
        svc.on(Ask)(lambda req: Echo(n=req.n))
        async with self.connect(svc, name="conformance-node") as bus:
            me = next((n for n in await bus.nodes() if n.id == bus.node.id), None)
            assert me is not None, "nodes() must include the calling node"
            assert me.name == "conformance-node"
            assert me.services == ("present",)
            assert set(me.handles) == {"conformance.ping", "conformance.ask"}
            assert me.pid == os.getpid()
            assert me.host
            assert me.started_at <= me.last_seen <= time.time() + 5

    @scenario()
    async def test_presence_join_and_leave(self) -> None:
        async with self.connect() as watcher:
            other = await self.connect(Service("joiner"))
            other_id = other.node.id

            async def joined() -> bool:
                return any(n.id == other_id and n.services == ("joiner",) for n in await watcher.nodes())

            await eventually(joined, self.presence_timeout, "the new node in nodes()")
            await other.close()

            async def left() -> bool:
                return all(n.id != other_id for n in await watcher.nodes())

            await eventually(left, self.leave_timeout, "the closed node to leave nodes()")

    @scenario()
    async def test_namespace_isolation(self) -> None:
        rec_1, rec_2 = Recorder(), Recorder()
        svc_1, svc_2 = Service("isolated"), Service("isolated")
        svc_1.on(Ping)(recording(rec_1))
        svc_2.on(Ping)(recording(rec_2))
        other_ns = f"{self.namespace}x"
        async with self.connect(svc_1) as bus_1, self.connect(svc_2, namespace=other_ns) as bus_2:
            await bus_1.publish(*(Ping(n=i) for i in range(5)))
            await rec_1.wait(5, 10)
            await bus_2.publish(Ping(n=99))
            await rec_2.wait(1, 10)
            assert bus_2.node.id not in {n.id for n in await bus_1.nodes()}
            assert bus_1.node.id not in {n.id for n in await bus_2.nodes()}
        rec_1.assert_exactly_once(list(range(5)))
        rec_2.assert_exactly_once([99])

    @scenario()
    async def test_drop_namespace_leaves_nothing(self) -> None:
        """Dead letters and retained messages are gone after a drop; a present node
        refuses it unless forced; the namespace works again from empty."""
        svc = Service("droppable")

        @svc.on
        async def refuse(job: Job) -> None:
            raise Reject("no")

        async with self.connect(svc) as bus:
            await bus.send(Job(n=1), Job(n=2))
            await dead_letters_of(bus, svc.name, 2)
            retained = bus.capabilities.retention
            presence = bus.capabilities.presence
        if retained:
            async with self.connect() as sender:
                await sender.send(Job(n=3))  # kept for the stopped service
        if presence:
            async with self.connect(Service("bystander")) as live:
                admin = await self.connect()
                try:
                    await eventually(lambda: sees(admin, live.node.id), self.presence_timeout, "the bystander")
                    with pytest.raises(NamespaceInUse, match="in use by 1 node"):
                        await admin.drop_namespace()
                finally:
                    await admin.close()
        admin = await self.connect()
        assert await admin.drop_namespace() >= 1
        assert admin.closed
        rec = Recorder()
        fresh = Service("droppable")
        fresh.on(Job)(recording_job(rec))
        async with self.connect(fresh) as bus:
            assert await bus.dead_letters(fresh) == []
            await bus.send(Job(n=10))
            await rec.wait(1, 10)
            await asyncio.sleep(0.2)  # a retained Job(n=3) that survived the drop would arrive with it
        rec.assert_exactly_once([10])
