"""Stream entries that hold no envelope (written by another program or by hand) are
dead-lettered ``malformed`` with a reason naming the missing field; the service goes on."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis_support import REDIS_URL, url_for

import pycomms
from pycomms import Command, Event, Service
from pycomms.testing import Recorder, eventually, run_strict


class Noted(Event, name="receipts.noted"):
    n: int


class Do(Command, name="receipts.do"):
    n: int


def test_an_entry_without_the_envelope_field_is_dead_lettered_malformed(namespace: str) -> None:
    async def scenario() -> None:
        rec = Recorder()
        svc = Service("receiver")

        @svc.on
        async def noted(event: Noted) -> None:
            rec.add(event.n)

        @svc.on
        async def do(command: Do) -> None:
            rec.add(100 + command.n)

        admin = aioredis.Redis.from_url(REDIS_URL)
        try:
            async with pycomms.connect(url_for(namespace, aof_warning="false"), services=[svc]) as bus:
                prefix = f"pycomms:{{{namespace}}}:"
                event_entry = await admin.xadd(f"{prefix}ev:receipts.noted", {"x": "1", "data": "{}"})
                await admin.xadd(f"{prefix}cmd:receipts.do", {"a": "1"})
                await bus.publish(Noted(n=1))
                await bus.send(Do(n=2))

                async def two_letters() -> bool:
                    return len(await bus.dead_letters("receiver")) == 2

                await eventually(two_letters, 10, "two dead letters")
                await rec.wait(2, 10)
                letters = {letter.type: letter for letter in await bus.dead_letters("receiver")}
                assert sorted(letters) == ["receipts.do", "receipts.noted"]
                for letter in letters.values():
                    assert letter.reason == "malformed"
                    assert "no field 'd' (the encoded envelope)" in letter.error
                    assert letter.body is None
                assert event_entry.decode() in letters["receipts.noted"].error
                assert "'x', 'data'" in letters["receipts.noted"].error
                assert "its fields: 'a'" in letters["receipts.do"].error
                assert sorted(rec.items) == [1, 102]
                assert await bus.purge("receiver") == 2
        finally:
            await admin.aclose()

    run_strict(scenario, 30)
