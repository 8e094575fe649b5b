"""The services ``pycomms run`` serves in the probe tests and the dashboard run:
``shop`` places orders and charges them; every tenth charge fails (one retry, then
the dead letters)."""

from __future__ import annotations

import asyncio

from otel_messages import Charge, OrderPlaced

from pycomms import Context, Retry, Service

shop = Service("shop", concurrency=8)
billing = Service("billing", concurrency=4, retry=Retry(max_attempts=2, delay=0.05, jitter=0))


@shop.on
async def placed(event: OrderPlaced, ctx: Context) -> None:
    await asyncio.sleep(0.002 * (event.order % 5))
    await ctx.send(Charge(order=event.order))


@billing.on
async def charge(command: Charge) -> None:
    await asyncio.sleep(0.001 * (command.order % 7))
    if command.order % 10 == 0:
        raise RuntimeError(f"card declined for order {command.order}")


services = [shop, billing]
