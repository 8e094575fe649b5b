"""Run under ``opentelemetry-instrument``: no instrumentation code here at all.
Publishes one event to a service of its own on memory:// and exits once it is handled."""

from __future__ import annotations

import asyncio

from otel_messages import OrderPlaced

import pycomms
from pycomms import Service


async def main() -> None:
    shop = Service("shop")
    handled = asyncio.Event()

    @shop.on
    async def placed(event: OrderPlaced) -> None:
        handled.set()

    async with pycomms.connect("memory://auto", services=[shop]) as bus:
        await bus.publish(OrderPlaced(order=1))
        await asyncio.wait_for(handled.wait(), 10)


if __name__ == "__main__":
    asyncio.run(main())
