"""Quorum queues (``queue_type=quorum``): the whole conformance suite, plus the delivery
limit that stops a message whose consumers keep dying.

On a private RabbitMQ node: on 2026-11-26 the shared RabbitMQ 3.10.8 stopped answering
(no new connections, no log lines) right after this suite had declared a quorum queue,
so the suite stays away from the broker other test runs share."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from amqp_support import PrivateBroker, fresh_namespace, url_for

from pycomms.spi import BackendConfig, Envelope, NodeInfo, Subscription
from pycomms.testing import ConformanceSuite, eventually, run_strict
from pycomms_amqp import AmqpTransport


class TestAmqpQuorum(ConformanceSuite):
    connect_options: ClassVar[dict[str, Any]] = {"queue_type": "quorum"}
    broker: ClassVar[PrivateBroker]

    @pytest.fixture(autouse=True)
    def _on_private_broker(self, module_broker: PrivateBroker) -> None:
        type(self).broker = module_broker

    def make_url(self, namespace: str) -> str:
        return url_for(namespace, self.broker.url)


@pytest.mark.faults
def test_delivery_limit_dead_letters_a_message_whose_consumers_keep_dying(module_broker: PrivateBroker) -> None:
    """Releasing a delivery unsettled (what a crashed consumer does) counts on quorum
    queues; at ``delivery_limit`` the message goes to the dead letters instead."""

    namespace = fresh_namespace()

    async def scenario() -> None:
        config = BackendConfig(
            url=url_for(namespace, module_broker.url),
            scheme="amqp",
            namespace=namespace,
            options={"queue_type": "quorum", "delivery_limit": 3},
        )
        transport = AmqpTransport(config)
        await transport.open(NodeInfo(id="limit0000000001", name="limit"), lambda data: None)
        try:
            subscription = Subscription("doomed", frozenset(), frozenset({"amqp_test.job"}), 1)
            envelope = Envelope(id="doomed-1", type="amqp_test.job", kind="command", source="x", body=b'{"n":1}')
            await transport.publish([envelope])
            attempts = []
            for _ in range(3):
                receiver = await transport.subscribe(subscription)
                (delivery,) = await receiver.receive(1)
                attempts.append(delivery.attempt)
                await receiver.close()  # gone without settling, like a crashed consumer
            assert attempts == [1, 2, 3]
            receiver = await transport.subscribe(subscription)  # the 4th delivery is not handed out

            async def dead_lettered() -> bool:
                return bool(await transport.dead_letters("doomed", 10))

            await eventually(dead_lettered, 20, "the message in the dead letters")
            await receiver.close()
            letters = await transport.dead_letters("doomed", 10)
            assert [(d.id, d.reason, d.type) for d in letters] == [("doomed-1", "failed", "amqp_test.job")]
            assert "delivery_limit=3" in letters[0].error
        finally:
            await transport.close()

    run_strict(scenario, 60)
