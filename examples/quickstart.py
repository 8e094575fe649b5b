"""The README's quick start, runnable as it stands.

    .venv/bin/python examples/quickstart.py        # after the README's set-up

It runs over ``memory://``: every bus in this one process that uses the URL
``memory://shop`` shares one in-process broker. Change the URL to run the very same
code over Redis, RabbitMQ, a SQL database or brokerless TCP.
"""

from __future__ import annotations

import asyncio

import pycomms
from pycomms import Command, Context, Event, Message, Request, Service


class OrderPlaced(Event):  # fan-out: every service that handles it gets one copy
    order_id: int
    total: float


class ChargeCard(Command):  # point-to-point: one instance of one service
    order_id: int
    amount: float


class Price(Message):  # a plain payload, here a reply
    cents: int


class GetPrice(Request[Price]):  # request/reply: the reply type is part of the type
    sku: str


billing = Service("billing", concurrency=16, retry=pycomms.Retry(max_attempts=5))
charged = asyncio.Event()


@billing.on  # the message type comes from the annotation
async def charge(event: OrderPlaced, ctx: Context) -> None:
    await ctx.send(ChargeCard(order_id=event.order_id, amount=event.total))


@billing.on
async def card(command: ChargeCard) -> None:
    print("charging", command.amount)
    charged.set()


@billing.on
async def price(req: GetPrice) -> Price:
    return Price(cents=999)


async def main() -> None:
    async with pycomms.connect("memory://shop", services=[billing]) as bus:
        await bus.publish(OrderPlaced(order_id=1, total=9.5))
        reply = await bus.request(GetPrice(sku="A"), timeout=5.0)
        print("price:", reply.cents, "cents")
        print("nodes:", [node.name for node in await bus.nodes()])
        await asyncio.wait_for(charged.wait(), timeout=5.0)  # the command sent by `charge`


if __name__ == "__main__":
    asyncio.run(main())
