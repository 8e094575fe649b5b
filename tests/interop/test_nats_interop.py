"""A foreign program on nats://: the clients of examples/interop, Node.js (nats.js v2 with
JetStream, and npm cloudevents in structured mode) and Python (nats-py with JetStream, and
the PyPI CloudEvents SDK), written from docs/interop/nats.md, against a real ``pycomms
run`` worker on the shared NATS server: the CloudEvents SDK both ways."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import nats
import pytest
from interop_support import (
    LANGUAGES,
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

NATS_URL = os.environ.get("PYCOMMS_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture(autouse=True)
def _nats_server() -> None:
    require_reachable(NATS_URL, 4222)


def bus_url(namespace: str) -> str:
    return with_option(NATS_URL, "namespace", namespace)


def drop(namespace: str) -> None:
    drop_namespace(bus_url(namespace))


@pytest.mark.parametrize("language", LANGUAGES)
def test_foreign_events_commands_requests_and_bad_input(
    language: str, namespace: str, start_worker: Callable[[str], Worker]
) -> None:
    worker = start_worker(bus_url(namespace))
    try:
        # independent programs at once: the bad input arrives among the good traffic
        burst, ship, quote, refused, bad = run_clients_at_once(
            language,
            "nats",
            NATS_URL,
            namespace,
            ("publish", "300"),
            ("send", "7"),
            ("request", "mug", "3"),
            ("request", "nope", "1"),
            ("bad",),
        )
        assert burst == [{"published": 300, "stored": 300}]
        assert ship == [{"sent": 7}]
        check_replies(quote, refused)
        assert [line.get("bad") for line in bad] == ["not json", "numeric time", "invalid data", None]

        check_handled(worker)

        check_dead_letters(dead_letters(bus_url(namespace), 4))
        # exactly once: nothing more arrived while the rest ran
        assert len(worker.records("order_placed")) == 301
    finally:
        worker.stop()
        drop(namespace)


def consumer_names(namespace: str) -> set[str]:
    """The durable consumers of the namespace's events stream."""

    async def go() -> set[str]:
        nc = await nats.connect(NATS_URL)
        try:
            infos = await nc.jetstream().consumers_info(f"PYCOMMS_{namespace}_EVENTS")
            return {info.name for info in infos}
        finally:
            await nc.close()

    return asyncio.run(go())


@pytest.mark.parametrize("language", LANGUAGES)
def test_pycomms_events_to_a_durable_subscriber_and_an_observer(
    language: str, namespace: str, start_worker: Callable[[str], Worker]
) -> None:
    worker = start_worker(bus_url(namespace))
    try:
        sub = BackgroundClient(language, "nats", NATS_URL, namespace, "subscribe", "audit", "3")
        assert sub.next_line() == {"ready": True}
        announce(bus_url(namespace), 3, "first")
        first = sub.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in first] == [
            ("interop.notice", "event", {"seq": n, "text": "first"}) for n in range(3)
        ]

        # published while the subscriber is down: kept for it, and PyComms' own service
        # got its own copy of all five
        announce(bus_url(namespace), 2, "while down")
        assert len(worker.wait_for("notice", 5)) == 5
        again = run_client(language, "nats", NATS_URL, namespace, "subscribe", "audit", "2").check().lines
        assert [e["data"] for e in again[1:]] == [{"seq": n, "text": "while down"} for n in range(2)]

        assert "audit" in consumer_names(namespace)
        assert run_client(language, "nats", NATS_URL, namespace, "unsubscribe", "audit").check().lines == [
            {"deleted": True}
        ]
        assert "audit" not in consumer_names(namespace)

        # a passing observer (a plain subscription) sees what is published while it runs
        before = consumer_names(namespace)
        observer = BackgroundClient(language, "nats", NATS_URL, namespace, "observe", "4")
        assert observer.next_line() == {"ready": True}
        announce(bus_url(namespace), 4, "watched")
        seen = observer.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in seen] == [
            ("interop.notice", "event", {"seq": n, "text": "watched"}) for n in range(4)
        ]
        assert sorted(r["data"]["seq"] for r in worker.wait_for("notice", 9)[5:]) == [0, 1, 2, 3]
        assert consumer_names(namespace) == before  # it created nothing on the server
    finally:
        worker.stop()
        drop(namespace)
