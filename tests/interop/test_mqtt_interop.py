"""A foreign program on mqtt://: the Node.js client of examples/interop (MQTT.js, MQTT 5,
and npm cloudevents in structured mode), written from docs/interop/mqtt.md, against a
real ``pycomms run`` worker on the shared Mosquitto: the CloudEvents SDK both ways."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from interop_support import (
    BackgroundClient,
    Worker,
    check_dead_letters,
    dead_letters,
    run_client,
    run_clients_at_once,
    with_option,
)
from interop_worker import Announce

import pycomms
from pycomms.testing import require_reachable

MQTT_URL = os.environ.get("PYCOMMS_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_reachable(MQTT_URL, 1883)


def bus_url(namespace: str) -> str:
    return with_option(MQTT_URL, "namespace", namespace)


def drop(namespace: str) -> None:
    async def go() -> None:
        bus = await pycomms.connect(bus_url(namespace))
        await bus.drop_namespace(force=True)

    asyncio.run(go())


def announce(namespace: str, count: int, text: str) -> None:
    async def go() -> None:
        async with pycomms.connect(bus_url(namespace)) as bus:
            await bus.send(Announce(count=count, text=text))

    asyncio.run(go())


def test_foreign_events_commands_requests_and_bad_input(namespace: str, start_worker: Callable[[str], Worker]) -> None:
    worker = start_worker(bus_url(namespace))
    try:
        # independent programs at once: the bad input arrives among the good traffic
        burst, ship, quote, quote5, refused, bad = run_clients_at_once(
            "node",
            "mqtt",
            MQTT_URL,
            namespace,
            ("publish", "300"),
            ("send", "7"),
            ("request", "mug", "3"),
            ("request5", "cup", "2"),
            ("request", "nope", "1"),
            ("bad",),
        )
        assert burst == [{"published": 300, "matched": 300}]
        assert ship == [{"sent": 7}]
        assert [(r["type"], r["kind"], r["data"], r["pycommserror"]) for r in quote] == [
            ("interop.quote", "reply", {"sku": "mug", "qty": 3, "cents": 750}, None)
        ]
        assert [(r["type"], r["kind"], r["data"], r["pycommserror"]) for r in quote5] == [
            ("interop.quote", "reply", {"sku": "cup", "qty": 2, "cents": 500}, None)
        ]
        assert [(r["type"], r["kind"], r["data"], r["pycommserror"]) for r in refused] == [
            ("pycomms.error", "reply", {"error": "no price for 'nope'"}, "rejected")
        ]
        assert [line.get("bad") for line in bad] == ["not json", "numeric time", "invalid data", None]

        # 300 events and the good one sent after the bad input, each handled exactly
        # once, the SDK's extension attribute a header
        handled = worker.wait_for("order_placed", 301)
        assert sorted(r["data"]["order_id"] for r in handled) == [*range(300), 1000]
        assert len({r["id"] for r in handled}) == 301
        burst_records = [r for r in handled if r["data"]["order_id"] < 300]
        assert all(r["headers"] == {"traceparent": TRACEPARENT} and r["attempt"] == 1 for r in burst_records)
        assert [r["data"] for r in worker.wait_for("ship", 1)] == [{"order_id": 7, "carrier": "post"}]

        check_dead_letters(dead_letters(bus_url(namespace), 4))
        # exactly once: nothing more arrived while the rest ran
        assert len(worker.records("order_placed")) == 301
    finally:
        worker.stop()
        drop(namespace)


def test_pycomms_events_to_a_durable_subscriber_and_an_observer(
    namespace: str, start_worker: Callable[[str], Worker]
) -> None:
    worker = start_worker(bus_url(namespace))
    try:
        sub = BackgroundClient("node", "mqtt", MQTT_URL, namespace, "subscribe", "audit", "3")
        assert sub.next_line() == {"ready": True}
        announce(namespace, 3, "first")
        first = sub.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in first] == [
            ("interop.notice", "event", {"seq": n, "text": "first"}) for n in range(3)
        ]

        # published while the subscriber is down: kept in its session, and PyComms' own
        # service got its own copy of all five
        announce(namespace, 2, "while down")
        assert len(worker.wait_for("notice", 5)) == 5
        again = run_client("node", "mqtt", MQTT_URL, namespace, "subscribe", "audit", "2").check().lines
        # (its resumed session may deliver them before its subscription is renewed)
        assert [e["data"] for e in again if "data" in e] == [{"seq": n, "text": "while down"} for n in range(2)]
        run_client("node", "mqtt", MQTT_URL, namespace, "unsubscribe", "audit").check()

        # a passing observer sees what is published while it runs
        observer = BackgroundClient("node", "mqtt", MQTT_URL, namespace, "observe", "4")
        assert observer.next_line() == {"ready": True}
        announce(namespace, 4, "watched")
        seen = observer.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in seen] == [
            ("interop.notice", "event", {"seq": n, "text": "watched"}) for n in range(4)
        ]
        assert sorted(r["data"]["seq"] for r in worker.wait_for("notice", 9)[5:]) == [0, 1, 2, 3]
    finally:
        worker.stop()
        drop(namespace)
