"""``pycomms demo``: a small shop, over whichever backend the URL names.

``orders`` publishes `OrderPlaced`; ``billing`` and ``shipping`` handle it; billing
asks ``pricing`` for the price by request/reply; one order is poison and ends in
billing's dead letters. Each service runs on its own bus: as its own OS process when
the backend links processes, else as a task in this process. Services report what
they do with `Note` events to a ``monitor`` service here, which prints the live
account, so the same code runs in both modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from urllib.parse import parse_qsl, urlsplit

from ._bus import Bus
from ._config import resolve_url
from ._connect import connect
from ._context import Context
from ._errors import Reject
from ._messages import Command, Event, Message, Request
from ._retry import Retry
from ._service import Service
from .spi import redact_url

POISON_SKU = "cursed-amulet"
SKUS = ["mug", "t-shirt", "sticker", "poster", "hoodie"]
PRICES = {"mug": 1250, "t-shirt": 1999, "sticker": 300, "poster": 900, "hoodie": 4500}
SERVICES = ("pricing", "billing", "shipping")


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


class Note(Event, name="demo.note"):
    """What a service did, for the live account."""

    service: str
    text: str
    handled: str = ""


def build_service(name: str) -> Service:
    """The demo's service called ``name``."""
    if name == "pricing":
        pricing = Service("pricing", concurrency=8)

        @pricing.on
        async def price(req: GetPrice, ctx: Context) -> Price:
            if req.sku not in PRICES:
                raise Reject(f"no price for {req.sku!r}")  # retrying cannot help: dead-letter at once
            await ctx.publish(Note(service="pricing", text="", handled="pricing"))
            return Price(cents=PRICES[req.sku])

        return pricing
    if name == "billing":
        billing = Service("billing", concurrency=8, retry=Retry(max_attempts=3, delay=0.2, backoff=2.0))

        @billing.on
        async def charge(order: OrderPlaced, ctx: Context) -> None:
            try:
                price = await ctx.request(GetPrice(sku=order.sku), timeout=10.0)
            except Exception as exc:
                text = f"order #{order.order_id}: attempt {ctx.attempt} failed: {exc}"
                await ctx.publish(Note(service="billing", text=text))
                raise
            total = price.cents * order.quantity
            text = f"charged order #{order.order_id}: {order.quantity} x {order.sku} = ${total / 100:.2f}"
            await ctx.publish(Note(service="billing", text=text, handled="billing"))

        return billing
    if name == "shipping":
        shipping = Service("shipping", concurrency=8)

        @shipping.on
        async def pack(order: OrderPlaced, ctx: Context) -> None:
            await ctx.send(ShipParcel(order_id=order.order_id, address=f"{order.order_id} Demo Street"))
            await ctx.publish(Note(service="shipping", text=f"packed order #{order.order_id}", handled="shipping"))

        @shipping.on
        async def ship(parcel: ShipParcel, ctx: Context) -> None:
            text = f"shipped order #{parcel.order_id} to {parcel.address}"
            await ctx.publish(Note(service="shipping", text=text, handled="parcels"))

        return shipping
    raise ValueError(f"no demo service {name!r}; expected one of {', '.join(SERVICES)}")


class Monitor:
    """Prints notes as they come and counts what was handled."""

    def __init__(self, expected: dict[str, int]) -> None:
        self.started = time.monotonic()
        self.expected = expected
        self.handled: Counter[str] = Counter()
        self.done = asyncio.Event()
        self.service = Service("monitor", concurrency=1)
        self.service.on(Note)(self.note)

    def say(self, who: str, text: str) -> None:
        print(f"  {time.monotonic() - self.started:6.3f}s  {who:<9} {text}", flush=True)

    async def note(self, note: Note) -> None:
        if note.text:
            self.say(note.service, note.text)
        if note.handled:
            self.handled[note.handled] += 1
            if all(self.handled[k] >= n for k, n in self.expected.items()):
                self.done.set()


async def run_demo(url: str | None, *, orders: int = 8, timeout: float = 60.0) -> int:
    """Run the demo; returns the process exit code (0 when every order was accounted for)."""
    url = _fresh_namespace(resolve_url(url))
    monitor = Monitor({"pricing": orders - 1, "billing": orders - 1, "shipping": orders, "parcels": orders})
    print(f"PyComms demo shop over {redact_url(url)}")
    buses: list[Bus] = []
    workers: list[subprocess.Popen[bytes]] = []
    try:
        orders_bus = await connect(url, services=[monitor.service], name="orders")
        buses.append(orders_bus)
        separate = orders_bus.capabilities.cross_process
        print(f"starting {', '.join(SERVICES)} " + ("as separate processes" if separate else "in this process"))
        for name in SERVICES:
            if separate:
                workers.append(_spawn_worker(name, url))
            else:
                buses.append(await connect(url, services=[build_service(name)], name=name))
        if not await _watch_joins(orders_bus, SERVICES, timeout=30.0):
            return 1
        poison = orders // 2
        print(f"\norders: placing {orders} orders (order #{poison} asks for a product that has no price)")
        started = monitor.started = time.monotonic()
        placed = [
            OrderPlaced(order_id=i, sku=POISON_SKU if i == poison else SKUS[i % len(SKUS)], quantity=1 + i % 3)
            for i in range(1, orders + 1)
        ]
        await asyncio.gather(*(orders_bus.publish(order) for order in placed))
        try:
            async with asyncio.timeout(timeout):
                await monitor.done.wait()
                # the poison order may still be between retries: poll, as an operator would
                while not (letters := await orders_bus.dead_letters("billing")):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            print(f"\nTIMED OUT after {timeout}s: handled {dict(monitor.handled)}, expected {monitor.expected}")
            return 1
        elapsed = time.monotonic() - started
        print("\ndead letters of billing:")
        for letter in letters:
            print(f"  {letter.type} #{letter.body.get('order_id')}: {letter.reason} after {letter.attempts} attempts")
            print(f"    {letter.error.splitlines()[0][:110]}")
        print("\nsummary")
        print(f"  published      {len(placed)} OrderPlaced")
        for name in ("pricing", "billing", "shipping", "parcels"):
            print(f"  {name:<14} {monitor.handled[name]} handled")
        print(f"  dead letters   {len(letters)} (billing)")
        print(f"  elapsed        {elapsed:.2f}s")
        if separate:  # memory:// is one broker per event loop; a blocking bus has a loop of its own
            answer = await asyncio.to_thread(_ask_blocking, url)
            print(f"\nthe blocking API (pycomms.sync), as a script or a Django view asks: {answer}")
        await orders_bus.purge("billing")
        await orders_bus.purge("pricing")
        return 0
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
        for bus in reversed(buses):
            await bus.close(grace=5)
        for worker in workers:
            try:
                await asyncio.to_thread(worker.wait, 15)
            except subprocess.TimeoutExpired:
                worker.kill()


def _ask_blocking(url: str) -> str:
    """What a program with no event loop does: `pycomms.sync`, the blocking twin of the bus."""
    from . import sync

    with sync.connect(url, name="script") as bus:
        price = bus.request(GetPrice(sku="mug"), timeout=10.0)
    return f"a mug costs {price.cents / 100:.2f}"


def _fresh_namespace(url: str) -> str:
    """Run in a namespace of its own unless the URL names one, so that messages left
    by an earlier run cannot mix into this one."""
    if any(key == "namespace" for key, _ in parse_qsl(urlsplit(url).query)):
        return url
    return f"{url}{'&' if '?' in url else '?'}namespace=demo-{uuid.uuid4().hex[:8]}"


def _spawn_worker(name: str, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYCOMMS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "pycomms._demo", name],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


async def _watch_joins(bus: Bus, services: tuple[str, ...], timeout: float) -> bool:
    """Print services as they appear in presence; false if they did not all come."""
    print("\nnodes:")
    shown: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for node in await bus.nodes():
            if node.id not in shown:
                shown.add(node.id)
                handles = ", ".join(node.handles) or "-"
                print(f"  joined: {node.name:<9} {node.host} pid {node.pid}  handles {handles}", flush=True)
        present = {s for node in await bus.nodes() for s in node.services}
        if set(services) <= present:
            return True
        if loop.time() > deadline:
            print(f"  services missing after {timeout}s: {sorted(set(services) - present)}")
            return False
        await asyncio.sleep(0.1)


async def _worker(name: str) -> None:
    async with connect(services=[build_service(name)], name=name) as bus:
        await bus.serve()


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR, format=f"{sys.argv[1]}: %(levelname)s %(message)s")
    asyncio.run(_worker(sys.argv[1]))
