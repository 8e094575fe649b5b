"""The FastAPI recipe (examples/web/fastapi_app.py) under a real uvicorn process: the
lifespan opens the bus, routes get it from a dependency, the pricing service answers
in the same process, published orders reach another node, and SIGTERM closes the bus."""

from __future__ import annotations

import signal

import httpx
from web_support import BIN, WEB, Orders, free_port, server

import pycomms.sync


def test_fastapi_app_under_uvicorn(url: str, orders: Orders) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(BIN / "uvicorn"), "fastapi_app:app", "--app-dir", str(WEB), "--port", str(port)]
    # uvicorn ends a graceful shutdown on SIGTERM by re-raising the signal: -15 is its clean exit
    with server(command, url=url, cwd=WEB, exit_codes=(0, -signal.SIGTERM)) as uvicorn:
        uvicorn.wait_for_http(f"{base}/nodes")
        price = httpx.get(f"{base}/prices/apple", timeout=30)
        assert price.status_code == 200, price.text
        assert price.json() == {"sku": "apple", "cents": 120, "served_here": True}
        placed = httpx.post(f"{base}/orders/7", params={"sku": "pear"}, timeout=30)
        assert placed.status_code == 202, placed.text
        orders.wait_for(7)
        assert "shop-web" in httpx.get(f"{base}/nodes", timeout=30).json()
    assert "Application shutdown complete" in uvicorn.output
    with pycomms.sync.connect(url) as bus:  # the lifespan closed the bus: gone from presence
        assert "shop-web" not in [n.name for n in bus.nodes()]
