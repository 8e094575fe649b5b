"""The Django recipe (examples/web/django_shop): the app config opens a `pycomms.sync`
bus, views use it, ``manage.py runservices`` serves the pricing service; tested with
Django's test client in this process, with a real ``runserver`` process, and under
gunicorn with pre-forked, threaded workers (the bus opened in the master before the
fork)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
from collections.abc import Iterator

import httpx
import pytest
from web_support import BIN, DJANGO, Orders, free_port, server


@pytest.fixture
def services(url: str) -> Iterator[None]:
    with server([sys.executable, "manage.py", "runservices", "--grace", "5"], url=url, cwd=DJANGO) as command:
        command.wait_for_line("serving pricing as node")
        yield
    assert "services stopped" in command.output


def test_django_views_with_the_test_client(url: str, orders: Orders, services: None) -> None:
    os.environ["PYCOMMS_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
    sys.path.insert(0, str(DJANGO))
    try:
        import django
        from django.test import Client

        django.setup()
        from shop.apps import bus

        try:
            client = Client()
            price = client.get("/prices/apple")
            assert price.status_code == 200, price.content
            assert price.json() == {"sku": "apple", "cents": 120}
            assert client.post("/orders/11?sku=pear").status_code == 202
            orders.wait_for(11)
            assert client.get("/whoami").json() == {"pid": os.getpid(), "node_pid": os.getpid()}
        finally:
            bus().close()
    finally:
        sys.path.remove(str(DJANGO))
        del os.environ["PYCOMMS_URL"], os.environ["DJANGO_SETTINGS_MODULE"]


def test_django_under_runserver(url: str, orders: Orders, services: None) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    with server(command, url=url, cwd=DJANGO, stop=signal.SIGINT) as web:
        web.wait_for_http(f"{base}/whoami")
        price = httpx.get(f"{base}/prices/pear", timeout=30)
        assert price.status_code == 200, price.text
        assert price.json() == {"sku": "pear", "cents": 95}
        assert httpx.post(f"{base}/orders/12", params={"sku": "apple"}, timeout=30).status_code == 202
        orders.wait_for(12)


def test_django_under_gunicorn_preforked_and_threaded(url: str, orders: Orders, services: None) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gunicorn = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"]
    gunicorn += ["--preload", "--graceful-timeout", "20", "wsgi:application"]
    with server(gunicorn, url=url, cwd=DJANGO, stop=signal.SIGTERM) as web:
        web.wait_for_http(f"{base}/whoami")
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            prices = list(pool.map(lambda _: httpx.get(f"{base}/prices/apple", timeout=30), range(40)))
            placed = list(pool.map(lambda n: httpx.post(f"{base}/orders/{n}", params={"sku": "pear"}), range(30, 50)))
            seen = list(pool.map(lambda _: httpx.get(f"{base}/whoami", timeout=30).json(), range(20)))
        assert [p.status_code for p in prices] == [200] * 40, [p.text for p in prices if p.status_code != 200]
        assert {p.json()["cents"] for p in prices} == {120}
        assert [p.status_code for p in placed] == [202] * 20
        orders.wait_for(*range(30, 50))
        for who in seen:  # each forked worker uses a connection of its own, not the master's
            assert who["node_pid"] == who["pid"] != web.proc.pid
    assert sum(orders.seen.values()) == 20, orders.seen
