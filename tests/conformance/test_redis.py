"""The conformance suite against Redis (``redis://``, pycomms-redis).

The server comes from ``$PYCOMMS_TEST_REDIS_URL`` (default 127.0.0.1:6379, db 0).
Unreachable server: skipped locally, a failure with ``CI=true``. Each test's
namespaces are dropped after it (the kit's ``drop_namespaces``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import redis

from pycomms.testing import ConformanceSuite, unavailable

REDIS_URL = os.environ.get("PYCOMMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True, scope="module")
def _server() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield client
    client.close()


class TestRedis(ConformanceSuite):
    # The release at close hands messages back at once; 10 s is the visibility timeout
    # used below plus slack, for a consumer that vanished without closing.
    redelivery_timeout = 15.0
    connect_options: ClassVar[dict[str, Any]] = {"visibility_timeout": 10, "aof_warning": False}

    def make_url(self, namespace: str) -> str:
        separator = "&" if "?" in REDIS_URL else "?"
        return f"{REDIS_URL}{separator}namespace={namespace}"
