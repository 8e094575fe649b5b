"""The Django recipe (examples/web/django_shop): the app config opens a `pycomms.sync`
bus, views use it, ``manage.py runservices`` serves the pricing service; tested with
Django's test client in this process and with a real ``runserver`` process."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import httpx
import pytest
from web_support import DJANGO, Orders, free_port, server


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
