"""The messages and services every web recipe shares: a shop that takes orders and
asks a pricing service for prices.

    .venv/bin/pycomms run examples/web/shop_messages.py:pricing --url redis://localhost:6379/0

runs the pricing service as a worker of its own; the web apps publish `OrderPlaced`
and ask `GetPrice` over the same URL.
"""

from __future__ import annotations

import os

from pycomms import Event, Message, Request, Service


# Explicit wire names: the contract between the web apps and the workers.
class OrderPlaced(Event, name="shop.order_placed"):
    order_id: int
    sku: str


class Price(Message, name="shop.price"):
    sku: str
    cents: int
    pid: int  # which process answered: the recipes' tests look at it


class GetPrice(Request[Price], name="shop.get_price"):
    sku: str


PRICES = {"apple": 120, "pear": 95}

pricing = Service("pricing")


@pricing.on
def price(request: GetPrice) -> Price:  # a plain function: run in a worker thread
    return Price(sku=request.sku, cents=PRICES.get(request.sku, 999), pid=os.getpid())
