"""Instances of one service started at the same moment choose session slots from presence
before any of them announced one, so two may choose the same. Mosquitto 2.0.11 then drops
each connection as the other connects, without the MQTT 5 reason 0x8E: unchecked, the two
reconnected in turn thousands of times a second (1,579 and 3,329 reconnections in 10 s in
two of four tries). The one with the larger node id must move to another slot.

What this does NOT check, because it fails today (docs/backends/mqtt.md, "Slots"): that
every event published right after such a start is handled in the same round. Part of
them waits in a slot's session until an instance takes that slot again (seen: 30 of 60
handled within 30 s, the rest delivered to the next round's instances).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from mqtt_support import url_of

import pycomms
from pycomms import Event, Service
from pycomms.testing import Recorder, run_strict

pytestmark = [pytest.mark.timeout(180)]
ROUNDS = 3
INSTANCES = 3
HEARTBEAT = 2.0


class Tick(Event, name="mqttslots.tick"):
    n: int


def test_instances_started_at_once_settle_on_slots_of_their_own(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pycomms.mqtt")

    async def one_round(url: str, first: int) -> None:
        handled = Recorder()

        def service() -> Service:
            svc = Service("slotted", concurrency=8)

            @svc.on
            async def tick(event: Tick) -> None:
                handled.add(event.n)

            return svc

        buses = await asyncio.gather(*(pycomms.connect(url, services=[service()]) for _ in range(INSTANCES)))
        try:
            await buses[0].publish(*(Tick(n=n) for n in range(first, first + 20)))
            await handled.wait(1, 30)  # the service runs
            await asyncio.sleep(2 * HEARTBEAT)  # a fight over a slot would go on meanwhile
        finally:
            await asyncio.gather(*(bus.close(grace=1) for bus in buses))

    async def scenario() -> None:
        url = url_of(namespace)
        for round_ in range(ROUNDS):
            await one_round(url, round_ * 1000)

    run_strict(scenario, 150)
    reconnects = [r for r in caplog.records if "connected again" in r.getMessage()]
    assert len(reconnects) <= 2 * ROUNDS * INSTANCES, f"{len(reconnects)} reconnections: instances fight over a slot"
