"""FastAPI (or any Starlette app): the lifespan opens the bus, a dependency hands it to
the routes, and the pricing service is served in the same process.

    PYCOMMS_URL=redis://localhost:6379/0 .venv/bin/uvicorn fastapi_app:app --app-dir examples/web

The async `pycomms.Bus` is the one to use here: routes are coroutines on uvicorn's
event loop, and so are the service's handlers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from shop_messages import GetPrice, OrderPlaced, pricing

import pycomms


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # serving `pricing` here is optional: with `pycomms run shop_messages.py:pricing` elsewhere,
    # pass services=[] and the same routes ask that worker instead
    async with pycomms.connect(services=[pricing], name="shop-web") as bus:
        app.state.bus = bus
        yield  # uvicorn serves requests; on shutdown the bus closes gracefully


app = FastAPI(lifespan=lifespan)


def get_bus(request: Request) -> pycomms.Bus:
    return request.app.state.bus  # type: ignore[no-any-return]


BusDep = Annotated[pycomms.Bus, Depends(get_bus)]


@app.post("/orders/{order_id}", status_code=202)
async def place_order(order_id: int, sku: str, bus: BusDep) -> dict[str, int]:
    await bus.publish(OrderPlaced(order_id=order_id, sku=sku))
    return {"order_id": order_id}


@app.get("/prices/{sku}")
async def get_price(sku: str, bus: BusDep) -> dict[str, object]:
    price = await bus.request(GetPrice(sku=sku), timeout=5.0)
    return {"sku": price.sku, "cents": price.cents, "served_here": price.pid == os.getpid()}


@app.get("/nodes")
async def nodes(bus: BusDep) -> list[str]:
    return sorted(node.name for node in await bus.nodes())
