"""The conformance suite against RabbitMQ (``amqp://``, pycomms-amqp).

The broker comes from ``$PYCOMMS_TEST_AMQP_URL`` (default: guest on 127.0.0.1:5672).
Unreachable broker: skipped locally, a failure with ``CI=true``. Each test's
namespaces are dropped after it (the kit's ``drop_namespaces``).
"""

from __future__ import annotations

import pytest
from shared_services import AMQP_URL

from pycomms.testing import ConformanceSuite, require_reachable


@pytest.fixture(autouse=True, scope="module")
def _broker() -> None:
    require_reachable(AMQP_URL, 5672)


class TestAmqp(ConformanceSuite):
    redelivery_timeout = 30.0

    def make_url(self, namespace: str) -> str:
        separator = "&" if "?" in AMQP_URL else "?"
        return f"{AMQP_URL}{separator}namespace={namespace}"
