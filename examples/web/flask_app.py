"""Flask (any WSGI app): one blocking `pycomms.sync` bus for the process, shared by
every request thread.

    PYCOMMS_URL=redis://localhost:6379/0 .venv/bin/gunicorn --chdir examples/web \\
        --workers 2 --threads 4 --preload flask_app:app

The bus opens when the module is imported. With ``--preload`` that happens once in
gunicorn's master; each forked worker then opens its own connection at its first
call (see `pycomms.sync` on fork), so nothing more is needed. It closes when the
process exits. The pricing service runs elsewhere
(``pycomms run examples/web/shop_messages.py:pricing``).
"""

from __future__ import annotations

import os

from flask import Flask, request
from shop_messages import GetPrice, OrderPlaced

import pycomms
import pycomms.sync

bus = pycomms.sync.connect(name="shop-flask")  # URL from $PYCOMMS_URL or pycomms.toml
app = Flask(__name__)


@app.post("/orders/<int:order_id>")
def place_order(order_id: int) -> tuple[dict[str, int], int]:
    bus.publish(OrderPlaced(order_id=order_id, sku=request.args["sku"]))
    return {"order_id": order_id}, 202


@app.get("/prices/<sku>")
def get_price(sku: str) -> dict[str, object] | tuple[dict[str, str], int]:
    try:
        price = bus.request(GetPrice(sku=sku), timeout=5.0)
    except pycomms.RequestTimeout:
        return {"error": "pricing did not answer"}, 504
    return {"sku": price.sku, "cents": price.cents}


@app.get("/whoami")
def whoami() -> dict[str, object]:
    return {"pid": os.getpid(), "node_pid": bus.node.pid, "node": bus.node.id}
