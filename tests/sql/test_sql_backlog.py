"""`SqlTransport.backlog`: messages ready for a service, without those being handled."""

from __future__ import annotations

import time
import uuid

from pycomms.spi import BackendConfig, Envelope, NodeInfo, Subscription, new_id
from pycomms.testing import run_strict
from pycomms_sql import SqlTransport

SUB = Subscription(service="tally", events=frozenset(), commands=frozenset({"sqltest.tally"}), concurrency=4)


def _transport(url: str) -> SqlTransport:
    base, _, query = url.partition("?")
    pairs = dict(item.split("=", 1) for item in query.split("&") if item)
    namespace = pairs.pop("namespace")
    return SqlTransport(BackendConfig(url=base, scheme=base.split(":", 1)[0], namespace=namespace, options=pairs))


def _command(n: int) -> Envelope:
    return Envelope(id=new_id(), type="sqltest.tally", kind="command", source="test", body={"n": n}, time=time.time())


def test_backlog_counts_ready_messages_only(url: str) -> None:
    async def main() -> None:
        transport = _transport(url)
        node = NodeInfo(id=uuid.uuid4().hex[:16], name="backlog-test", started_at=time.time(), last_seen=time.time())
        await transport.open(node, lambda data: None)
        try:
            assert await transport.backlog("tally") is None  # not served by this bus
            receiver = await transport.subscribe(SUB)
            assert await transport.backlog("tally") == 0
            await transport.publish([_command(n) for n in range(5)])
            assert await transport.backlog("tally") == 5
            taken = await receiver.receive(2)
            assert len(taken) == 2
            assert await transport.backlog("tally") == 3  # leased rows are being handled
            await taken[0].retry(60)
            assert await transport.backlog("tally") == 3  # a delayed retry is not ready
            await taken[1].ack()
            assert await transport.backlog("other") is None
            await receiver.close()
        finally:
            await transport.close()
        assert await transport.backlog("tally") is None  # closed

    run_strict(main, 60)
