"""A foreign program on mqtt://: the Node.js client of examples/interop (MQTT.js, MQTT 5,
and npm cloudevents in structured mode), written from docs/interop/mqtt.md, against a
real ``pycomms run`` worker on the shared Mosquitto: the CloudEvents SDK both ways."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from interop_support import (
    BackgroundClient,
    Worker,
    announce,
    check_dead_letters,
    check_handled,
    check_replies,
    dead_letters,
    drop_namespace,
    run_client,
    run_clients_at_once,
    with_option,
)

from pycomms.testing import require_reachable

MQTT_URL = os.environ.get("PYCOMMS_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_reachable(MQTT_URL, 1883)


def bus_url(namespace: str) -> str:
    return with_option(MQTT_URL, "namespace", namespace)


def drop(namespace: str) -> None:
    drop_namespace(bus_url(namespace))


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
        check_replies(quote, refused)
        assert [(r["type"], r["kind"], r["data"], r["pycommserror"]) for r in quote5] == [
            ("interop.quote", "reply", {"sku": "cup", "qty": 2, "cents": 500}, None)
        ]
        assert [line.get("bad") for line in bad] == ["not json", "numeric time", "invalid data", None]

        check_handled(worker)

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
        announce(bus_url(namespace), 3, "first")
        first = sub.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in first] == [
            ("interop.notice", "event", {"seq": n, "text": "first"}) for n in range(3)
        ]

        # published while the subscriber is down: kept in its session, and PyComms' own
        # service got its own copy of all five
        announce(bus_url(namespace), 2, "while down")
        assert len(worker.wait_for("notice", 5)) == 5
        again = run_client("node", "mqtt", MQTT_URL, namespace, "subscribe", "audit", "2").check().lines
        # (its resumed session may deliver them before its subscription is renewed)
        assert [e["data"] for e in again if "data" in e] == [{"seq": n, "text": "while down"} for n in range(2)]
        run_client("node", "mqtt", MQTT_URL, namespace, "unsubscribe", "audit").check()

        # a passing observer sees what is published while it runs
        observer = BackgroundClient("node", "mqtt", MQTT_URL, namespace, "observe", "4")
        assert observer.next_line() == {"ready": True}
        announce(bus_url(namespace), 4, "watched")
        seen = observer.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in seen] == [
            ("interop.notice", "event", {"seq": n, "text": "watched"}) for n in range(4)
        ]
        assert sorted(r["data"]["seq"] for r in worker.wait_for("notice", 9)[5:]) == [0, 1, 2, 3]
    finally:
        worker.stop()
        drop(namespace)
