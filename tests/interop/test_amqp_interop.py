"""Foreign programs on amqp://: the Node.js (amqplib + npm cloudevents) and Python
(aio-pika + PyPI cloudevents, no PyComms) clients of examples/interop, written from
docs/interop/amqp.md, against a real ``pycomms run`` worker on RabbitMQ: the CloudEvents
SDKs both ways, structured mode and binary mode (``ce-`` headers)."""

from __future__ import annotations

import datetime
import subprocess
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from interop_support import (
    LANGUAGES,
    TRACEPARENT,
    BackgroundClient,
    Worker,
    check_dead_letters,
    check_replies,
    run_client,
    run_clients_at_once,
    with_option,
)
from interop_worker import Announce
from shared_services import AMQP_URL, delete_amqp_namespaces
from system_tools import sbin_tool

import pycomms
import pycomms.sync
from pycomms.sync import Bus as SyncBus
from pycomms.testing import require_reachable, unavailable
from pycomms_amqp._binary import binary_attributes


@pytest.fixture(autouse=True)
def _rabbitmq() -> None:
    require_reachable(AMQP_URL, 5672)
    if sbin_tool("rabbitmqctl") is None or (urlsplit(AMQP_URL).port or 5672) != 5672:
        unavailable("these tests look at the broker with the local rabbitmqctl (the local default node only)")


def bus_url(namespace: str, queue_type: str = "classic") -> str:
    return with_option(with_option(AMQP_URL, "namespace", namespace), "queue_type", queue_type)


def rabbitmqctl(*args: str) -> list[list[str]]:
    """The rows ``rabbitmqctl list_...`` prints (about 2 s a call: used sparingly)."""
    listing = subprocess.run(
        [sbin_tool("rabbitmqctl") or "rabbitmqctl", *args[:1], "-q", "--no-table-headers", *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.split("\t") for line in listing.stdout.splitlines() if line.strip()]


def bindings() -> dict[str, list[tuple[str, str]]]:
    """exchange -> (destination, routing key) of each of its bindings."""
    found: dict[str, list[tuple[str, str]]] = {}
    for row in rabbitmqctl("list_bindings", "source_name", "destination_name", "routing_key"):
        if len(row) == 3:
            found.setdefault(row[0], []).append((row[1], row[2]))
    return found


@pytest.fixture
def controller(namespace: str) -> Iterator[SyncBus]:
    """The test's own bus on the namespace (to trigger notices, read dead letters);
    drops the namespace at the end and checks that no queue of it is left."""
    bus = pycomms.sync.connect(bus_url(namespace))
    yield bus
    bus.drop_namespace(force=True)
    left = [row[0] for row in rabbitmqctl("list_queues", "name") if row[0].startswith(f"pycomms.{namespace}.")]
    if left:
        delete_amqp_namespaces([namespace])
    assert left == [], f"left behind after the namespace drop: {left}"


def dead_letters(bus: SyncBus, count: int, timeout: float = 30.0) -> list[pycomms.DeadLetter]:
    """The worker's dead letters once there are at least ``count`` (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        found = bus.dead_letters("interop")
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("language", LANGUAGES)
def test_foreign_events_commands_requests_and_bad_input(
    language: str, namespace: str, controller: SyncBus, start_worker: Callable[[str], Worker]
) -> None:
    env = {"INTEROP_QUEUE_TYPE": "classic"}
    worker = start_worker(bus_url(namespace))
    try:
        # independent programs at once: the bad input arrives among the good traffic
        burst, ship, quote, refused, bad, binary = run_clients_at_once(
            language,
            "amqp",
            AMQP_URL,
            namespace,
            ("publish", "300"),
            ("send", "7"),
            ("request", "mug", "3"),
            ("request", "nope", "1"),
            ("bad",),
            ("binary",),
            env=env,
        )
        assert burst == [{"published": 300}]
        assert ship == [{"sent": 7}]
        check_replies(quote, refused)
        assert [line.get("bad") for line in bad] == ["not json", "numeric time", "invalid data", None]
        assert binary == [{"published": 3}]

        # 300 events, the good one sent after the bad input and two in binary mode (ce-
        # headers), each handled exactly once, the SDK's extension attribute a header
        handled = worker.wait_for("order_placed", 303)
        assert sorted(r["data"]["order_id"] for r in handled) == [*range(300), 1000, 2000, 2001]
        assert len({r["id"] for r in handled}) == 303
        burst_records = [r for r in handled if r["data"]["order_id"] < 300]
        assert all(r["headers"] == {"traceparent": TRACEPARENT} and r["attempt"] == 1 for r in burst_records)
        assert [r["data"] for r in worker.wait_for("ship", 1)] == [{"order_id": 7, "carrier": "post"}]

        # bad input dead-lettered, each with its reason; the binary one without its kind too
        letters = dead_letters(controller, 5)
        (kindless,) = [d for d in letters if d.reason == "malformed" and "binary" in d.error]
        assert "'kind'" in kindless.error
        assert kindless.type == "interop.order_placed"
        check_dead_letters([d for d in letters if d is not kindless])

        # exactly once: nothing more arrived while the rest ran
        assert len(worker.records("order_placed")) == 303
        # the requesters' reply queues went with their connections
        replies = bindings().get(f"pycomms.{namespace}.replies", [])
        assert len(replies) == 2  # the worker's and the controller's
        assert controller.node.id in {key for _, key in replies}
    finally:
        worker.stop()


@pytest.mark.parametrize("language", LANGUAGES)
def test_pycomms_events_to_a_durable_subscriber_and_an_observer(
    language: str, namespace: str, controller: SyncBus, start_worker: Callable[[str], Worker]
) -> None:
    worker = start_worker(bus_url(namespace))
    events = f"pycomms.{namespace}.events"
    try:
        sub = BackgroundClient(language, "amqp", AMQP_URL, namespace, "subscribe", "audit", "3")
        assert sub.next_line() == {"ready": True}
        controller.send(Announce(count=3, text="first"))
        first = sub.finish().check().lines
        assert [(e["type"], e["kind"], e["data"]) for e in first] == [
            ("interop.notice", "event", {"seq": n, "text": "first"}) for n in range(3)
        ]

        # published while the subscriber is down: kept in its queue, and PyComms' own
        # service got its own copy of all five
        controller.send(Announce(count=2, text="while down"))
        assert len(worker.wait_for("notice", 5)) == 5
        again = run_client(language, "amqp", AMQP_URL, namespace, "subscribe", "audit", "2").check().lines
        assert [e["data"] for e in again if "data" in e] == [{"seq": n, "text": "while down"} for n in range(2)]

        run_client(language, "amqp", AMQP_URL, namespace, "unsubscribe", "audit").check()

        # a passing observer sees what is published while it runs, and leaves nothing
        observer = BackgroundClient(language, "amqp", AMQP_URL, namespace, "observe", "4")
        assert observer.next_line() == {"ready": True}
        controller.send(Announce(count=4, text="watched"))
        seen = observer.finish().check().lines
        assert [e["data"] for e in seen] == [{"seq": n, "text": "watched"} for n in range(4)]
        # neither the subscriber's queue nor the observer's is bound any more: both are gone
        svc = f"pycomms.{namespace}.svc.interop"
        assert [dest for dest, key in bindings()[events] if key == "interop.notice"] == [svc]
    finally:
        worker.stop()


def test_quorum_queues_with_the_documented_arguments(
    namespace: str, controller: SyncBus, start_worker: Callable[[str], Worker]
) -> None:
    """With ``queue_type=quorum`` the command queues are quorum queues; a foreign sender
    that declares them as docs/interop/amqp.md says (``x-queue-type: quorum``) is not
    refused. On the shared broker, kept small: four quorum queues."""
    worker = start_worker(bus_url(namespace, "quorum"))
    env = {"INTEROP_QUEUE_TYPE": "quorum"}
    try:
        for order_id, language in enumerate(LANGUAGES, start=1):
            run_client(language, "amqp", AMQP_URL, namespace, "send", str(order_id), env=env).check()
            reply = run_client(language, "amqp", AMQP_URL, namespace, "request", "cup", "2", env=env).check()
            assert [(r["type"], r["data"]) for r in reply.lines] == [
                ("interop.quote", {"sku": "cup", "qty": 2, "cents": 500})
            ]
        assert sorted(r["data"]["order_id"] for r in worker.wait_for("ship", 2)) == [1, 2]
        queues = dict(row for row in rabbitmqctl("list_queues", "name", "type") if len(row) == 2)
        assert queues[f"pycomms.{namespace}.cmd.interop.ship"] == "quorum"
        assert queues[f"pycomms.{namespace}.cmd.interop.get_quote"] == "quorum"
    finally:
        worker.stop()


def test_binary_mode_headers_become_attributes() -> None:
    """Pure logic of pycomms_amqp._binary: header values of any AMQP field type become the
    strings CloudEvents expects; a message without ``specversion`` is not binary mode."""
    headers = {
        "ce-specversion": b"1.0",
        "cloudEvents_id": "a-1",
        "cloudEvents:source": "/x",
        "ce-type": "t",
        "ce-kind": "event",
        "ce-time": datetime.datetime(2026, 12, 6, 21, 0, 0),
        "ce-flag": True,
        "ce-count": 3,
        "pycomms-attempt": 2,
    }
    assert binary_attributes(headers, "application/json") == {
        "specversion": "1.0",
        "id": "a-1",
        "source": "/x",
        "type": "t",
        "kind": "event",
        "time": "2026-12-06T21:00:00Z",
        "flag": "true",
        "count": "3",
        "datacontenttype": "application/json",
    }
    assert binary_attributes({"pycomms-attempt": 2, "ce-id": "x"}, None) is None
