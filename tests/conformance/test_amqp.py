"""The conformance suite against RabbitMQ (``amqp://``, pycomms-amqp).

The broker comes from ``$PYCOMMS_TEST_AMQP_URL`` (default: guest on 127.0.0.1:5672).
Unreachable broker: skipped locally, a failure with ``CI=true``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from shared_services import AMQP_URL, delete_amqp_namespaces

from pycomms.testing import ConformanceSuite, unavailable


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=3):
            return True
    except OSError:
        return False


_namespaces: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _broker() -> Iterator[None]:
    if not _reachable(AMQP_URL):
        unavailable(f"RabbitMQ is not reachable at {urlsplit(AMQP_URL).netloc.rpartition('@')[2]}")
    yield
    with contextlib.suppress(Exception):
        delete_amqp_namespaces(_namespaces)


class TestAmqp(ConformanceSuite):
    redelivery_timeout = 30.0

    def setup_method(self, method: object) -> None:
        super().setup_method(method)
        _namespaces.extend((self.namespace, f"{self.namespace}x"))  # ...x: test_namespace_isolation

    def make_url(self, namespace: str) -> str:
        separator = "&" if "?" in AMQP_URL else "?"
        return f"{AMQP_URL}{separator}namespace={namespace}"
