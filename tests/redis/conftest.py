"""Fixtures of the Redis backend's own tests (helpers live in redis_support.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from redis_support import REDIS_SERVER, REDIS_URL, PrivateRedis, drop_namespace, new_namespace

from pycomms.testing import unavailable


@pytest.fixture(scope="session", autouse=True)
def shared_server() -> None:
    """The shared server must answer: skipped locally when it does not, failed under CI."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis is not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh namespace on the shared server, dropped after the test (and checked empty)."""
    name = new_namespace()
    yield name
    drop_namespace(name)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A private redis-server with AOF everysec, killed and removed after the test."""
    if not os.path.exists(REDIS_SERVER):
        unavailable(f"redis-server not found at {REDIS_SERVER}")
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()
