"""A foreign Python program on nats://: examples/interop/python/nats_client.py (nats-py with
JetStream and the PyPI CloudEvents SDK, no PyComms), written from docs/interop/nats.md,
against a real ``pycomms run`` worker on the shared NATS server, driven as the interop
tests drive the other Python clients (tests/interop/interop_support.py): publish, command,
request and reply, bad input dead-lettered, a durable subscriber that keeps what is
published while it is down, a passing observer that creates nothing on the server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "interop"))

from interop_support import (
    BackgroundClient,
    Worker,
    announce,
    check_dead_letters,
    check_handled,
    check_replies,
    dead_letters,
    drop_namespace,
    fresh_namespace,
    run_client,
    run_clients_at_once,
    with_option,
)
from nats_support import NATS_URL

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture
def interop_namespace() -> str:
    return fresh_namespace()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[str], Worker]]:
    """``start_worker(url)``: a running, ready worker on ``url``; stopped after the test."""
    workers: list[Worker] = []

    def start(url: str) -> Worker:
        worker = Worker(url, tmp_path / f"handled-{len(workers)}.jsonl")
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
    BackgroundClient.stop_leftovers()


def bus_url(namespace: str) -> str:
    return with_option(NATS_URL, "namespace", namespace)


def test_python_client_events_commands_requests_and_bad_input(
    interop_namespace: str, start_worker: Callable[[str], Worker]
) -> None:
    namespace = interop_namespace
    worker = start_worker(bus_url(namespace))
    try:
        burst, ship, quote, refused, bad = run_clients_at_once(
            "python",
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
        assert len(worker.records("order_placed")) == 301  # exactly once
    finally:
        worker.stop()
        drop_namespace(bus_url(namespace))


def consumer_names(namespace: str) -> set[str]:
    async def go() -> set[str]:
        nc = await nats.connect(NATS_URL)
        try:
            return {info.name for info in await nc.jetstream().consumers_info(f"PYCOMMS_{namespace}_EVENTS")}
        finally:
            await nc.close()

    return asyncio.run(go())


def test_python_client_durable_subscriber_and_observer(
    interop_namespace: str, start_worker: Callable[[str], Worker]
) -> None:
    namespace = interop_namespace
    worker = start_worker(bus_url(namespace))
    try:
        sub = BackgroundClient("python", "nats", NATS_URL, namespace, "subscribe", "audit", "3")
        assert sub.next_line() == {"ready": True}
        announce(bus_url(namespace), 3, "first")
        first = sub.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in first] == [
            ("interop.notice", "event", {"seq": n, "text": "first"}) for n in range(3)
        ]

        # published while the subscriber is down: kept for it; PyComms' own service got all five
        announce(bus_url(namespace), 2, "while down")
        assert len(worker.wait_for("notice", 5)) == 5
        again = run_client("python", "nats", NATS_URL, namespace, "subscribe", "audit", "2").check().lines
        assert [e["data"] for e in again[1:]] == [{"seq": n, "text": "while down"} for n in range(2)]

        assert "audit" in consumer_names(namespace)
        assert run_client("python", "nats", NATS_URL, namespace, "unsubscribe", "audit").check().lines == [
            {"deleted": True}
        ]
        assert "audit" not in consumer_names(namespace)

        before = consumer_names(namespace)
        observer = BackgroundClient("python", "nats", NATS_URL, namespace, "observe", "4")
        assert observer.next_line() == {"ready": True}
        announce(bus_url(namespace), 4, "watched")
        seen = observer.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in seen] == [
            ("interop.notice", "event", {"seq": n, "text": "watched"}) for n in range(4)
        ]
        assert sorted(r["data"]["seq"] for r in worker.wait_for("notice", 9)[5:]) == [0, 1, 2, 3]
        assert consumer_names(namespace) == before  # the observer created nothing on the server
    finally:
        worker.stop()
        drop_namespace(bus_url(namespace))
