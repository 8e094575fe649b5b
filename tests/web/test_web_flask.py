"""The Flask recipe (examples/web/flask_app.py) under gunicorn with 2 pre-forked workers
of 4 threads: the bus opened at import in gunicorn's master, each forked worker opening
its own connection, requests from many threads at once, pricing in another process."""

from __future__ import annotations

import concurrent.futures
import signal

import httpx
from web_support import BIN, WEB, Orders, free_port, server


def test_flask_app_under_gunicorn_preforked_and_threaded(url: str, orders: Orders) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pricing = [str(BIN / "pycomms"), "run", "shop_messages.py:pricing"]
    gunicorn = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"]
    gunicorn += ["--preload", "--graceful-timeout", "20", "flask_app:app"]
    with server(pricing, url=url, cwd=WEB) as worker, server(gunicorn, url=url, cwd=WEB, stop=signal.SIGTERM) as web:
        worker.wait_for_line("serving pricing")
        web.wait_for_http(f"{base}/whoami")
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            prices = list(pool.map(lambda _: httpx.get(f"{base}/prices/pear", timeout=30), range(40)))
            placed = list(pool.map(lambda n: httpx.post(f"{base}/orders/{n}", params={"sku": "apple"}), range(20)))
            seen = list(pool.map(lambda _: httpx.get(f"{base}/whoami", timeout=30).json(), range(20)))
        assert [p.status_code for p in prices] == [200] * 40, [p.text for p in prices if p.status_code != 200]
        assert {p.json()["cents"] for p in prices} == {95}
        assert [p.status_code for p in placed] == [202] * 20
        orders.wait_for(*range(20))
        for who in seen:  # each worker answers with a node of its own process, not the master's
            assert who["node_pid"] == who["pid"] != web.proc.pid
    assert sum(orders.seen.values()) == 20, orders.seen
