"""The conformance suite against NATS JetStream (``nats://``, pycomms-nats).

The server comes from ``$PYCOMMS_TEST_NATS_URL`` (default 127.0.0.1:4222, JetStream on).
Unreachable server: skipped locally, a failure with ``CI=true``. Each test's
namespaces are dropped after it (the kit's ``drop_namespaces``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pytest

from pycomms.testing import ConformanceSuite, require_reachable

NATS_URL = os.environ.get("PYCOMMS_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture(autouse=True, scope="module")
def _server() -> None:
    require_reachable(NATS_URL, 4222)


class TestNats(ConformanceSuite):
    # A release at close (-NAK) hands messages back at once; 10 s is the ack_wait used
    # below, plus slack, for a consumer that vanished without closing.
    redelivery_timeout = 15.0
    connect_options: ClassVar[dict[str, Any]] = {"visibility_timeout": 10}

    def make_url(self, namespace: str) -> str:
        separator = "&" if "?" in NATS_URL else "?"
        return f"{NATS_URL}{separator}namespace={namespace}"
