"""Foreign programs on tcp:// (docs/interop/tcp.md): the Node.js client (``net``) and the
raw Python client (asyncio streams), each with its CloudEvents SDK, join a real PyComms
worker process as peers with the minimal STATE (they listen nowhere) and find it in the
same-host registry. Both directions, request/reply, bad input dead-lettered while good
traffic flows, a durable subscriber and a passing observer, and no trace of the clients
once they left."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from interop_support import BackgroundClient, Worker, run_client, with_option

import pycomms

pytestmark = [pytest.mark.timeout(120)]
BURST = 300


@pytest.fixture(autouse=True)
def private_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Same-host discovery in this test's own directory (the worker and the clients
    inherit it), so the run leaves nothing in /tmp/pycomms-UID."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime


@pytest.mark.parametrize("language", ["node", "python"])
def test_tcp_interop(language: str, namespace: str, start_worker: Any, private_registry: Path) -> None:
    url = with_option("tcp://", "namespace", namespace)
    worker: Worker = start_worker(url)
    try:
        # foreign -> PyComms.
        runs = [  # independent programs at once: the bad input arrives among the good traffic
            BackgroundClient(language, "tcp", "tcp://", namespace, *args)
            for args in (
                ("bad",),
                ("publish", str(BURST)),
                ("send", "7", "ups"),
                ("request", "mug", "3"),
                ("request", "nope", "1"),
            )
        ]
        bad, _, _, quote, refused = (run.finish().check().lines for run in runs)
        assert bad == [{"bad": 2}]
        assert quote == [
            {
                "type": "interop.quote",
                "kind": "reply",
                "data": {"sku": "mug", "qty": 3, "cents": 750},
                "pycommserror": None,
            }
        ]
        assert refused == [
            {
                "type": "pycomms.error",
                "kind": "reply",
                "data": {"error": "no price for 'nope'"},
                "pycommserror": "rejected",
            }
        ]
        # The client waited for every ACK, which the worker sends once it handled the message.
        handled = worker.records("order_placed")
        assert sorted(r["data"]["order_id"] for r in handled) == list(range(BURST))
        assert len({r["id"] for r in handled}) == BURST
        assert [(r["data"], r["attempt"]) for r in worker.records("ship")] == [({"order_id": 7, "carrier": "ups"}, 1)]

        # PyComms -> foreign: a durable subscriber gets what was published while it was away.
        service = f"{language}-audit"
        run_client(language, "tcp", "tcp://", namespace, "subscribe", service).check()
        run_client(language, "tcp", "tcp://", namespace, "announce", "5", "durable").check()
        got = run_client(language, "tcp", "tcp://", namespace, "consume", service, "5").check().lines
        assert sorted(line["data"]["seq"] for line in got) == [0, 1, 2, 3, 4]
        assert {(line["type"], line["kind"], line["data"]["text"]) for line in got} == {
            ("interop.notice", "event", "durable")
        }
        # Retired for good: the worker forgets the service and keeps nothing more for it.
        run_client(language, "tcp", "tcp://", namespace, "unsubscribe", service).check()
        observed = run_client(language, "tcp", "tcp://", namespace, "observe", "4", "passing").check().lines
        assert sorted(line["data"]["seq"] for line in observed) == [0, 1, 2, 3]
        letters, nodes, services = asyncio.run(inspect(url))
    finally:
        log = worker.stop()
    reasons = {letter.reason: letter for letter in letters}
    assert set(reasons) == {"invalid", "malformed", "rejected"}, reasons
    assert "order_id" in reasons["invalid"].error
    assert "'time' must be an RFC 3339 timestamp string, got 1721400000.25" in reasons["malformed"].error
    # The clients said BYE: no node of theirs is left, only the worker (and the inspecting bus).
    assert [n for n in nodes if n.startswith(("js-", "py-"))] == []
    assert services == {"interop"}  # the worker's catalog, as gossiped to a new node
    assert "not delivered" not in log  # nothing was spooled for the retired subscriber
    # Dropping the namespace removes the registry directory: nothing of the test is left.
    asyncio.run(drop(url))
    assert list((private_registry / "pycomms").iterdir()) == []


async def inspect(url: str) -> tuple[list[pycomms.DeadLetter], list[str], set[str]]:
    async with pycomms.connect(url) as bus:
        catalog = set(bus._transport._catalog.services)  # type: ignore[attr-defined]
        return await bus.dead_letters("interop"), [n.id for n in await bus.nodes()], catalog


async def drop(url: str) -> None:
    async with pycomms.connect(url) as bus:
        await bus.drop_namespace()
