"""Fidelity and routing: what arrives, where, and how many times."""

from __future__ import annotations

import pytest

from .._context import Context
from .._errors import PublishError
from .._service import Service
from ._base import SuiteBase, recording, recording_job, recording_typed, scenario
from ._messages import Ask, Blob, Empty, Job, Keyed, Ping, numbered_types
from ._runner import Recorder


class RoutingScenarios(SuiteBase):
    # fidelity ----------------------------------------------------------------------

    @scenario()
    async def test_event_round_trip_fidelity(self) -> None:
        """Unicode, control characters, nested values and floats arrive unchanged."""
        rec = Recorder()
        svc = Service("fidelity")

        @svc.on(Ping)
        def handle(m: Ping) -> None:  # a sync handler, run in a thread
            rec.add(m.n, m)

        sent = Ping(
            n=1,
            text='héllo ✓ 日本語 🚀 \u0000 \n\t "quoted" \\ </script>',
            tags=["", "a b", "ß" * 3],
            nested={"pi": 3.141592653589793, "tiny": 5e-324, "neg": -0.0, "big": 1.7976931348623157e308},
        )
        async with self.connect(svc) as bus:
            await bus.publish(sent)
            await rec.wait(1, 10)
        assert rec.items == [sent]

    @scenario()
    async def test_empty_message(self) -> None:
        rec = Recorder()
        svc = Service("empty")

        @svc.on(Empty)
        async def handle(m: Empty) -> None:
            rec.add("empty", m)

        async with self.connect(svc) as bus:
            await bus.publish(Empty())
            await rec.wait(1, 10)
        assert rec.items == [Empty()]

    @scenario()
    async def test_message_near_size_limit(self) -> None:
        """A message just under the limit arrives intact; just over is refused before sending."""
        rec = Recorder()
        svc = Service("big")

        @svc.on(Blob)
        async def handle(m: Blob) -> None:
            rec.add(len(m.data), m)

        async with self.connect(svc) as bus:
            limit = 1024 * 1024
            near = Blob(data="x" * (limit - 1024))
            await bus.publish(near)
            with pytest.raises(PublishError, match="limit"):
                await bus.publish(Blob(data="y" * limit))
            await rec.wait(1, 30)
            await bus.publish(Blob(data="end"))
            await rec.wait(2, 30)
        assert rec.items == [near, Blob(data="end")]

    @scenario()
    async def test_headers_round_trip(self) -> None:
        rec = Recorder()
        svc = Service("headers")

        @svc.on(Ping)
        async def handle(m: Ping, ctx: Context) -> None:
            rec.add(m.n, dict(ctx.headers))

        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with self.connect(svc) as bus:
            await bus.publish(Ping(n=1), headers={"traceparent": trace, "tenant": "ünï ✓", "region2": ""})
            await rec.wait(1, 10)
        assert rec.items[0] == {"traceparent": trace, "tenant": "ünï ✓", "region2": ""}

    # routing -----------------------------------------------------------------------

    @scenario()
    async def test_fan_out_one_copy_per_service(self) -> None:
        """An event reaches every service that handles it, once each."""
        recs = {name: Recorder() for name in ("fan-a", "fan-b", "fan-c")}
        services = []
        for name, rec in recs.items():
            svc = Service(name)
            svc.on(Ping)(recording(rec))
            services.append(svc)
        async with self.connect(*services) as bus:
            await bus.publish(*(Ping(n=i) for i in range(20)))
            for rec in recs.values():
                await rec.wait(20, 20)
        for rec in recs.values():
            rec.assert_exactly_once(list(range(20)))

    @scenario()
    async def test_competing_consumers(self) -> None:
        """Two instances of one service share its messages: each handled by exactly one."""
        rec = Recorder()
        seen_by: dict[str, int] = {}

        def make_instance(tag: str) -> Service:
            svc = Service("workers", concurrency=4)

            @svc.on(Job)
            async def handle(m: Job) -> None:
                seen_by[tag] = seen_by.get(tag, 0) + 1
                rec.add(m.n)

            @svc.on(Ping)
            async def handle_event(m: Ping) -> None:
                seen_by[tag] = seen_by.get(tag, 0) + 1
                rec.add(1000 + m.n)

            return svc

        async with self.connect(make_instance("one")) as bus1, self.connect(make_instance("two")) as bus2:
            await bus1.send(*(Job(n=i) for i in range(40)))
            await bus2.publish(*(Ping(n=i) for i in range(40)))
            await rec.wait(80, 30)
        rec.assert_exactly_once([*range(40), *range(1000, 1040)])

    @scenario()
    async def test_command_goes_to_one_service_instance(self) -> None:
        rec = Recorder()
        handler_svc = Service("commands")
        handler_svc.on(Job)(recording_job(rec))
        bystander = Service("bystander")
        bystander.on(Ping)(recording(Recorder()))
        async with self.connect(handler_svc, bystander), self.connect() as sender:
            await sender.send(Job(n=1), Job(n=2))
            await rec.wait(2, 10)
            await sender.send(Job(n=3))
            await rec.wait(3, 10)
        rec.assert_exactly_once([1, 2, 3])

    @scenario()
    async def test_many_types_on_one_bus(self) -> None:
        events, commands = numbered_types(12)
        rec = Recorder()
        svc = Service("many")
        for cls in [*events, *commands]:
            svc.on(cls)(recording_typed(rec))
        async with self.connect(svc) as bus:
            await bus.publish(*(cls(n=i) for i, cls in enumerate(events)))
            await bus.send(*(cls(n=i) for i, cls in enumerate(commands)))
            await rec.wait(24, 20)
        rec.assert_exactly_once(
            [(cls.type_name, i) for i, cls in enumerate(events)]
            + [(cls.type_name, i) for i, cls in enumerate(commands)]
        )

    @scenario()
    async def test_event_without_subscribers_is_accepted(self) -> None:
        async with self.connect() as bus:
            await bus.publish(Ping(n=1))
            await bus.send(Job(n=1))

    @scenario()
    async def test_kind_mismatch_is_a_type_error(self) -> None:
        async with self.connect() as bus:
            with pytest.raises(TypeError, match="publish"):
                await bus.publish(Job(n=1))  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="send"):
                await bus.send(Ping(n=1))  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await bus.send(Ask(n=1))  # type: ignore[arg-type]

    @scenario()
    async def test_ordering_by_key(self) -> None:
        rec = Recorder()
        svc = Service("ordered", concurrency=1)

        @svc.on(Keyed)
        async def handle(m: Keyed) -> None:
            rec.add(m.n)

        async with self.connect(svc) as bus, self.connect() as pub:
            self.require(bus, "ordering")
            for i in range(50):
                await pub.publish(Keyed(n=i), key="k")
            await rec.wait(50, 20)
        assert rec.items == list(range(50))
