"""Coalesced acks (`Settler`): a model of the broker's settle rules checks every frame it
sends for any order of outcomes, and the real broker agrees after a scrambled run."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast
from unittest.mock import patch

from aiormq.abc import AbstractChannel as RawChannel
from amqp_support import url_for
from hypothesis import given, settings
from hypothesis import strategies as st

from pycomms.spi import BackendConfig, Envelope, NodeInfo, Subscription
from pycomms.testing import run_strict, scale
from pycomms_amqp import AmqpTransport, _settler
from pycomms_amqp._settler import Settler


class BrokerModel:
    """The unacknowledged deliveries of one channel, settled the way RabbitMQ does: a
    tag that is not outstanding closes the channel; ``multiple`` covers every outstanding
    tag up to its own."""

    def __init__(self, tags: range) -> None:
        self.outstanding = set(tags)
        self.acked: list[int] = []
        self.requeued: list[int] = []

    def _take(self, tag: int, multiple: bool) -> list[int]:
        assert tag in self.outstanding, f"unknown delivery tag {tag}: the broker would close the channel"
        taken = sorted(t for t in self.outstanding if t <= tag) if multiple else [tag]
        self.outstanding.difference_update(taken)
        return taken

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.acked += self._take(tag, multiple)

    async def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True) -> None:
        self.requeued += self._take(tag, multiple)


outcomes = st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=1, max_size=40)
"""Per delivery: acked (else released) and the loop turn (0-3 turns later) it settles in."""


@settings(max_examples=300, deadline=None)
@given(outcomes, st.randoms(use_true_random=False), st.sampled_from([1, 4, 1024]))
def test_frames_settle_exactly_what_was_asked_in_any_order(
    plan: list[tuple[bool, int]], rnd: random.Random, compact_after: int
) -> None:
    """Also with the out-of-order bookkeeping compacted early and often."""
    tags = range(1, len(plan) + 1)
    order = list(zip(tags, plan, strict=True))
    rnd.shuffle(order)

    async def scenario() -> BrokerModel:
        broker = BrokerModel(tags)
        settler = Settler(cast(RawChannel, broker))
        for tag in sorted(tags, key=lambda t: (t + rnd.randrange(3), t)):  # mostly in order
            settler.delivered(tag)
        for turn in range(4):
            for tag, (ack, when) in order:
                if when == turn:
                    (settler.ack if ack else settler.release)(tag)
            await asyncio.sleep(0)
        await settler.flush(5)
        await settler.close()
        return broker

    with patch.object(_settler, "COMPACT_AFTER", compact_after):
        broker = asyncio.run(scenario())
    assert sorted(broker.acked) == [tag for tag, (ack, _) in zip(tags, plan, strict=True) if ack]
    assert sorted(broker.requeued) == [tag for tag, (ack, _) in zip(tags, plan, strict=True) if not ack]
    assert not broker.outstanding


def test_in_order_acks_go_out_as_one_multiple_ack() -> None:
    async def scenario() -> list[Any]:
        sent: list[Any] = []

        class Recorder(BrokerModel):
            async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
                sent.append((tag, multiple))
                await super().basic_ack(tag, multiple)

        settler = Settler(cast(RawChannel, Recorder(range(1, 65))))
        for tag in range(1, 65):
            settler.delivered(tag)
        for tag in range(1, 65):
            settler.ack(tag)
        await settler.flush(5)
        return sent

    assert asyncio.run(scenario()) == [(64, True)]


def test_scrambled_acks_settle_every_message_on_the_broker(namespace: str) -> None:
    """Acks in random order (and some retries) over many loop turns: the channel is never
    closed by a bad ``multiple`` ack, and once the receiver has closed (which would give
    back anything unsettled), the queue is empty."""

    async def scenario() -> None:
        config = BackendConfig(url=url_for(namespace), scheme="amqp", namespace=namespace, options={})
        spi = AmqpTransport(config)
        await spi.open(NodeInfo(id="settle-node", name="settle-test"), lambda data: None)
        try:
            jobs = frozenset({"amqp_test.settle"})
            receiver = await spi.subscribe(Subscription("settle", frozenset(), jobs, 16))
            count = 300
            await spi.publish([_job(n) for n in range(count)])
            rnd = random.Random(7)
            handled = 0
            async with asyncio.timeout(60 * scale()):
                while handled < count:
                    batch = list(await receiver.receive(16))
                    rnd.shuffle(batch)
                    for delivery in batch:
                        if delivery.attempt == 1 and rnd.random() < 0.1:
                            await delivery.retry(0)  # comes back as attempt 2
                            continue
                        await delivery.ack()
                        handled += 1
                        if rnd.random() < 0.3:
                            await asyncio.sleep(0)
            await receiver.close()
            link = spi._link
            assert link is not None
            channel = await link.admin()
            declared = await channel.declare_queue(spi.names.command_queue("amqp_test.settle"), passive=True)
            assert declared.declaration_result.message_count == 0
        finally:
            await spi.close()

    run_strict(scenario, 120)


def _job(n: int) -> Envelope:
    return Envelope(id=f"s-{n}", type="amqp_test.settle", kind="command", source="x", body=f'{{"n":{n}}}'.encode())
