"""The conformance suite against an MQTT 5 broker (``mqtt://``, pycomms-mqtt).

The broker comes from ``$PYCOMMS_TEST_MQTT_URL`` (default: Mosquitto on 127.0.0.1:1883).
Unreachable broker: skipped locally, a failure with ``CI=true``. Each test's namespaces
are dropped after it (the kit's ``drop_namespaces``): their persistent sessions end and
their retained messages are cleared. Scenarios for what MQTT cannot do are skipped by
the kit itself, from the declared `Capabilities` (``ordering``).
"""

from __future__ import annotations

import os

import pytest

from pycomms.testing import ConformanceSuite, require_reachable

MQTT_URL = os.environ.get("PYCOMMS_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@pytest.fixture(autouse=True, scope="module")
def _broker() -> None:
    require_reachable(MQTT_URL, 1883)


class TestMqtt(ConformanceSuite):
    # A message left unsettled at close waits in the slot's session and comes back as
    # soon as the next instance takes the slot: no visibility timeout to wait out.
    redelivery_timeout = 15.0

    def make_url(self, namespace: str) -> str:
        separator = "&" if "?" in MQTT_URL else "?"
        return f"{MQTT_URL}{separator}namespace={namespace}"
