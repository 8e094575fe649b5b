"""Fixtures of the AMQP backend's own tests (helpers live in amqp_support.py)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqp_support import (
    RABBITMQ_SERVER,
    PrivateBroker,
    broker_address,
    drop_namespace,
    fresh_namespace,
    leftovers,
    reachable,
)
from shared_services import delete_amqp_namespaces

from pycomms.testing import unavailable

_namespaces: list[str] = []


@pytest.fixture(scope="session")
def shared_broker() -> None:
    """The shared broker must answer: skipped locally when it does not, failed under CI."""
    if not reachable(broker_address()):
        unavailable(f"RabbitMQ is not reachable at {':'.join(map(str, broker_address()))}")


@pytest.fixture
def namespace(shared_broker: None) -> Iterator[str]:
    """A fresh namespace, dropped (`Bus.drop_namespace`) on the shared broker after the test."""
    name = fresh_namespace()
    _namespaces.append(name)
    yield name
    asyncio.run(drop_namespace(name))


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """At the end, the tests' namespaces must have left nothing on the shared broker
    (checked with the local ``rabbitmqctl`` when there is one): what is left is deleted,
    and reported as an error, since it is something `drop_namespace` missed."""
    yield
    left = leftovers(_namespaces)
    if left:
        delete_amqp_namespaces(_namespaces)
        pytest.fail(f"drop_namespace() left {len(left)} object(s) of the tests' namespaces: {left[:10]}")


def _private_broker() -> Iterator[PrivateBroker]:
    if not Path(RABBITMQ_SERVER).exists():
        unavailable(f"{RABBITMQ_SERVER} is not installed; these tests need a private RabbitMQ node")
    root = Path(tempfile.mkdtemp(prefix="pycomms-rabbit-"))
    broker = PrivateBroker(root)
    try:
        broker.start()
        yield broker
    finally:
        with contextlib.suppress(Exception):
            broker.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    """A private RabbitMQ node for one test (it may kill it)."""
    yield from _private_broker()


@pytest.fixture(scope="module")
def module_broker() -> Iterator[PrivateBroker]:
    """A private RabbitMQ node shared by the tests of one module."""
    yield from _private_broker()
