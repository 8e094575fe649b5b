"""``pycomms demo``: a small shop, over whichever backend the URL names.

``orders`` publishes `OrderPlaced`; ``billing`` and ``shipping`` handle it; billing
asks ``pricing`` for the price by request/reply; one order is poison and ends in
billing's dead letters. Each service runs on its own bus (its own node), so the
demo also shows presence.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from ._bus import Bus, connect
from ._config import resolve_url
from ._context import Context
from ._errors import Reject
from ._messages import Command, Event, Message, Request
from ._retry import Retry
from ._service import Service
from .spi import redact_url

POISON_SKU = "cursed-amulet"
SKUS = ["mug", "t-shirt", "sticker", "poster", "hoodie"]


class OrderPlaced(Event, name="demo.order_placed"):
    order_id: int
    sku: str
    quantity: int


class ShipParcel(Command, name="demo.ship_parcel"):
    order_id: int
    address: str


class Price(Message, name="demo.price"):
    cents: int


class GetPrice(Request[Price], name="demo.get_price"):
    sku: str


PRICES = {"mug": 1250, "t-shirt": 1999, "sticker": 300, "poster": 900, "hoodie": 4500}


class Shop:
    """The demo's services, with a live account of what they do."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.handled: Counter[str] = Counter()
        self.done = asyncio.Event()
        self.expected: dict[str, int] = {}
        self.pricing = Service("pricing", concurrency=8)
        self.billing = Service("billing", concurrency=8, retry=Retry(max_attempts=3, delay=0.2, backoff=2.0))
        self.shipping = Service("shipping", concurrency=8)
        self.pricing.on(GetPrice)(self.price)
        self.billing.on(OrderPlaced)(self.charge)
        self.shipping.on(OrderPlaced)(self.pack)
        self.shipping.on(ShipParcel)(self.ship)

    def say(self, who: str, text: str) -> None:
        print(f"  {time.monotonic() - self.started:6.3f}s  {who:<9} {text}", flush=True)

    def count(self, what: str) -> None:
        self.handled[what] += 1
        if all(self.handled[k] >= n for k, n in self.expected.items()):
            self.done.set()

    async def price(self, req: GetPrice) -> Price:
        if req.sku not in PRICES:
            raise Reject(f"no price for {req.sku!r}")  # retrying cannot help: dead-letter at once
        self.count("pricing")
        return Price(cents=PRICES[req.sku])

    async def charge(self, order: OrderPlaced, ctx: Context) -> None:
        try:
            price = await ctx.request(GetPrice(sku=order.sku), timeout=10.0)
        except Exception as exc:
            self.say("billing", f"order #{order.order_id}: attempt {ctx.attempt} failed: {exc}")
            raise
        total = price.cents * order.quantity
        self.say("billing", f"charged order #{order.order_id}: {order.quantity} x {order.sku} = ${total / 100:.2f}")
        self.count("billing")

    async def pack(self, order: OrderPlaced, ctx: Context) -> None:
        self.say("shipping", f"packed order #{order.order_id}")
        await ctx.send(ShipParcel(order_id=order.order_id, address=f"{order.order_id} Demo Street"))
        self.count("shipping")

    async def ship(self, parcel: ShipParcel) -> None:
        self.say("shipping", f"shipped parcel for order #{parcel.order_id} to {parcel.address}")
        self.count("parcels")


async def run_demo(url: str | None, *, orders: int = 8, timeout: float = 60.0) -> int:
    """Run the demo; returns the process exit code (0 when every order was accounted for)."""
    url = resolve_url(url)
    shop = Shop()
    shop.expected = {"billing": orders - 1, "shipping": orders, "parcels": orders}
    print(f"PyComms demo shop over {redact_url(url)}")
    buses: list[Bus] = []
    try:
        for service in (shop.pricing, shop.billing, shop.shipping):
            buses.append(await connect(url, services=[service], name=service.name))
        orders_bus = await connect(url, name="orders")
        buses.append(orders_bus)
        await _show_nodes(orders_bus, expect=4)
        poison = orders // 2
        print(f"\norders: placing {orders} orders (order #{poison} asks for a product that has no price)")
        started = time.monotonic()
        placed = [
            OrderPlaced(order_id=i, sku=POISON_SKU if i == poison else SKUS[i % len(SKUS)], quantity=1 + i % 3)
            for i in range(1, orders + 1)
        ]
        await asyncio.gather(*(orders_bus.publish(order) for order in placed))
        try:
            async with asyncio.timeout(timeout):
                await shop.done.wait()
                # the poison order may still be between retries: poll, as an operator would
                while not (letters := await orders_bus.dead_letters("billing")):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            print(f"\nTIMED OUT after {timeout}s: handled {dict(shop.handled)}, expected {shop.expected}")
            return 1
        elapsed = time.monotonic() - started
        print("\ndead letters of billing:")
        for letter in letters:
            print(f"  {letter.type} #{letter.body.get('order_id')}: {letter.reason} after {letter.attempts} attempts")
            print(f"    {letter.error.splitlines()[0][:110]}")
        print("\nsummary")
        print(f"  published      {len(placed)} OrderPlaced")
        for name in ("pricing", "billing", "shipping", "parcels"):
            print(f"  {name:<14} {shop.handled[name]} handled")
        print(f"  dead letters   {len(letters)} (billing)")
        print(f"  elapsed        {elapsed:.2f}s")
        await orders_bus.purge("billing")
        await orders_bus.purge("pricing")
        return 0
    finally:
        for bus in reversed(buses):
            await bus.close(grace=5)


async def _show_nodes(bus: Bus, expect: int) -> None:
    deadline = time.monotonic() + 10
    nodes = await bus.nodes()
    while len(nodes) < expect and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        nodes = await bus.nodes()
    print("\nnodes up:")
    for node in sorted(nodes, key=lambda n: n.name):
        handles = ", ".join(node.handles) or "-"
        print(f"  {node.name:<9} {node.id}  pid {node.pid}  handles {handles}")
