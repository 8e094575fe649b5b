"""Foreign programs on redis://: the Node.js (ioredis + npm cloudevents) and Python (redis-py
+ PyPI cloudevents, no PyComms) clients of examples/interop, written from
docs/interop/redis.md, against a real ``pycomms run`` worker on the shared Redis: the
CloudEvents SDKs both ways."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
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
from shared_services import REDIS_URL

from pycomms.testing import require_reachable


@pytest.fixture(autouse=True)
def _redis() -> None:
    require_reachable(REDIS_URL, 6379)


def bus_url(namespace: str) -> str:
    # the shared test server keeps nothing on disk, on purpose
    return with_option(with_option(REDIS_URL, "namespace", namespace), "aof_warning", "false")


def namespace_keys(namespace: str) -> set[str]:
    with redis.Redis.from_url(REDIS_URL) as r:
        return {k.decode() for k in r.scan_iter(match=f"pycomms:{{{namespace}}}:*", count=1000)}


def drop(namespace: str) -> None:
    drop_namespace(bus_url(namespace))
    assert namespace_keys(namespace) == set()


@pytest.mark.parametrize("language", LANGUAGES)
def test_foreign_events_commands_requests_and_bad_input(
    language: str, namespace: str, start_worker: Callable[[str], Worker]
) -> None:
    worker = start_worker(bus_url(namespace))
    try:
        # independent programs at once: the bad input arrives among the good traffic
        burst, ship, quote, refused, bad = run_clients_at_once(
            language,
            "redis",
            REDIS_URL,
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

        dead = dead_letters(bus_url(namespace), 4)
        check_dead_letters(dead)

        # exactly once: nothing more arrived while the rest ran
        assert len(worker.records("order_placed")) == 301
        # the requester's reply streams are gone: only live PyComms nodes' remain
        replies = {k for k in namespace_keys(namespace) if ":reply:" in k}
        assert replies == {f"pycomms:{{{namespace}}}:reply:{node}" for node in live_nodes(namespace)}
    finally:
        worker.stop()
        drop(namespace)


def live_nodes(namespace: str) -> set[str]:
    prefix = f"pycomms:{{{namespace}}}:"
    with redis.Redis.from_url(REDIS_URL) as r:
        members = {m.decode() for m in r.smembers(f"{prefix}nodes")}
        return {m for m in members if r.exists(f"{prefix}node:{m}")}


@pytest.mark.parametrize("language", LANGUAGES)
def test_pycomms_events_to_a_durable_subscriber_and_an_observer(
    language: str, namespace: str, start_worker: Callable[[str], Worker]
) -> None:
    worker = start_worker(bus_url(namespace))
    stream = f"pycomms:{{{namespace}}}:ev:interop.notice"
    try:
        sub = BackgroundClient(language, "redis", REDIS_URL, namespace, "subscribe", "audit", "3")
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
        again = run_client(language, "redis", REDIS_URL, namespace, "subscribe", "audit", "2").check().lines
        assert [e["data"] for e in again[1:]] == [{"seq": n, "text": "while down"} for n in range(2)]

        run_client(language, "redis", REDIS_URL, namespace, "unsubscribe", "audit").check()
        with redis.Redis.from_url(REDIS_URL) as r:
            assert [g["name"] for g in r.xinfo_groups(stream)] == [b"interop"]

        # a passing observer sees what is published while it runs, and writes nothing
        before = namespace_keys(namespace)
        observer = BackgroundClient(language, "redis", REDIS_URL, namespace, "observe", "4")
        assert observer.next_line() == {"ready": True}
        announce(bus_url(namespace), 4, "watched")
        seen = observer.finish().check().lines
        assert [e["data"] for e in seen] == [{"seq": n, "text": "watched"} for n in range(4)]
        with redis.Redis.from_url(REDIS_URL) as r:
            assert [g["name"] for g in r.xinfo_groups(stream)] == [b"interop"]
        assert {k for k in namespace_keys(namespace) if ":reply:" not in k and ":node:" not in k} == {
            k for k in before if ":reply:" not in k and ":node:" not in k
        }
    finally:
        worker.stop()
        drop(namespace)
