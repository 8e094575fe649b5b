"""Fixtures of the MQTT backend's own tests: the shared broker must answer (skipped
locally, a failure with ``CI=true``) and each test gets a fresh namespace, dropped after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from mqtt_support import url_of
from shared_services import MQTT_URL

import pycomms
from pycomms.testing import require_reachable


@pytest.fixture(scope="session", autouse=True)
def shared_broker() -> None:
    require_reachable(MQTT_URL, 1883)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        bus = await pycomms.connect(url_of(name))
        await bus.drop_namespace(force=True)

    asyncio.run(drop())
