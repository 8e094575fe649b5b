"""A publish the broker refuses (an MQTT 5 PUBACK reason code of 0x80 or more) fails with
`PublishError` naming the reason; before, it counted as sent, and the message was lost.
A private Mosquitto whose ACL denies the command topic of one message type."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mqtt_support import MOSQUITTO, PrivateMosquitto

import pycomms
from pycomms import Command, PublishError
from pycomms.testing import run_strict, unavailable


class Denied(Command, name="mqttrefused.denied"):
    n: int


def test_a_publish_the_broker_refuses_is_a_publish_error(tmp_path: Path) -> None:
    if not os.path.exists(MOSQUITTO):
        unavailable(f"mosquitto not found at {MOSQUITTO}")
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\ntopic deny pycomms/refused/c/#\n")
    broker = PrivateMosquitto(tmp_path, listener_options=[f"acl_file {acl}"])
    broker.start()

    async def scenario() -> None:
        async with pycomms.connect(f"{broker.url}?namespace=refused&operation_timeout=5") as bus:
            with pytest.raises(PublishError) as info:
                await bus.send(Denied(n=1))
            text = str(info.value)
            assert f"127.0.0.1:{broker.port}" in text, text
            assert "refused by the broker: Not authorized (0x87)" in text, text

    try:
        run_strict(scenario, 60)
    finally:
        broker.stop()
