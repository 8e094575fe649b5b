"""memory:// hands a published envelope to its receivers without parsing it again
(`MemoryDelivery.decoded`): what a handler sees must be what decoding the bytes gives,
and never the publisher's objects nor another service's."""

from __future__ import annotations

import pytest

import pycomms
from pycomms import Context, Event, Service
from pycomms._memory import MemoryDelivery, MemoryReceiver, _Broker, _Item, _Queue
from pycomms.spi import Envelope, EnvelopeError, new_id
from pycomms.testing import Recorder, run_strict


class Order(Event, name="handover.order"):
    n: int
    tags: list[str]
    extra: dict[str, list[int]]


def url() -> str:
    return f"memory://handover?namespace=n{new_id()[-12:]}"


def test_each_service_gets_its_own_copy_of_body_and_headers() -> None:
    async def scenario() -> None:
        seen = Recorder()
        first, second = Service("first"), Service("second")

        @first.on
        async def spoil(order: Order, ctx: Context) -> None:
            seen.add("first", ("first", order.n, list(order.tags), dict(ctx.headers), ctx.correlation_id))
            order.tags.append("spoiled")
            order.extra["a"].append(99)
            ctx.headers["traceparent"] = "spoiled"

        @second.on
        async def look(order: Order, ctx: Context) -> None:
            await seen.wait(1, 2)  # after `spoil` changed its copies
            seen.add("second", ("second", order.n, list(order.tags), dict(ctx.headers), ctx.correlation_id))

        headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        async with pycomms.connect(url(), services=[first, second]) as bus:
            order = Order(n=1, tags=["a"], extra={"a": [1]})
            await bus.publish(order, headers=headers, key="k1")
            await seen.wait(2, 2)
            assert order == Order(n=1, tags=["a"], extra={"a": [1]})  # the publisher's object is untouched
            assert headers == {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        assert sorted(seen.items) == [
            ("first", 1, ["a"], headers, None),
            ("second", 1, ["a"], headers, None),
        ]

    run_strict(scenario, 5)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"correlation_id": "c-1", "causation_id": 'x"y', "key": "k\u00e9", "headers": {"h1": "v", "traceparent": "t"}},
        {"kind": "request", "reply_to": "node1"},
    ],
)
def test_decoded_is_what_decode_gives(fields: dict[str, object]) -> None:
    kind = fields.pop("kind", "event")
    sent = Envelope(
        new_id(), "handover.order", kind, "src", b'{"n":1,"tags":["a"],"extra":{}}', 1765065600.1234, **fields
    )  # type: ignore[arg-type]
    data = sent.encode()
    receiver = MemoryReceiver(_Broker(), _Queue())
    got = MemoryDelivery(receiver, _Item(data, 1, sent), 0).decoded(len(data))
    expected = Envelope.decode(data, len(data))
    assert (got.id, got.type, got.kind, got.source, got.body, got.headers) == (
        expected.id,
        expected.type,
        expected.kind,
        expected.source,
        expected.body,
        expected.headers,
    )
    assert (got.correlation_id, got.causation_id, got.reply_to, got.key, got.content_type) == (
        expected.correlation_id,
        expected.causation_id,
        expected.reply_to,
        expected.key,
        expected.content_type,
    )
    assert got.time == pytest.approx(expected.time, abs=0.001)  # decode keeps milliseconds
    assert got.headers is not sent.headers
    with pytest.raises(EnvelopeError, match="exceeds the limit") as too_large:
        MemoryDelivery(receiver, _Item(data, 1, sent), 1).decoded(len(data) - 1)
    assert too_large.value.reason == "too_large"
