"""One trace across two processes on every cross-process backend:

    test process                         worker process (otel_worker.py)
    publish OrderPlaced ───────────────▶ process OrderPlaced
                                           send Charge
    process Charge ◀─────────────────────┘
      request GetPrice ────────────────▶ process GetPrice (SERVER)
      ◀──────────────── reply ─────────┘

Both processes record with the SDK's in-memory exporter; the worker writes its spans
to a file when it stops. Every span must be in one trace, each the child of the one
before it, across the process boundary both ways.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector
from otel_messages import Charge, GetPrice, OrderPlaced, span_record
from shared_services import AMQP_URL, MYSQL_URL, POSTGRES_URL, REDIS_URL

import pycomms
from pycomms import Context, Service
from pycomms.testing import eventually, require_reachable, run_strict

HERE = Path(__file__).parent
BACKENDS: dict[str, tuple[str, int, str]] = {
    # scheme: (base URL, default port, messaging.system); sqlite's file is made per test
    "redis": (REDIS_URL, 6379, "redis"),
    "tcp": ("tcp://127.0.0.1:0", 0, "tcp"),
    "amqp": (AMQP_URL, 5672, "rabbitmq"),
    "postgresql": (POSTGRES_URL, 5432, "postgresql"),
    "mysql": (MYSQL_URL, 3306, "mysql"),
    "sqlite": ("sqlite:///{tmp}/bus.db", 0, "sqlite"),
    "nats": (os.environ.get("PYCOMMS_TEST_NATS_URL", "nats://127.0.0.1:4222"), 4222, "nats"),
    "mqtt": (os.environ.get("PYCOMMS_TEST_MQTT_URL", "mqtt://127.0.0.1:1883"), 1883, "mqtt"),
}
DISTRIBUTIONS = {"nats": "pycomms-nats", "mqtt": "pycomms-mqtt"}


def installed(scheme: str) -> bool:
    return importlib.util.find_spec(f"pycomms_{scheme}") is not None


def with_namespace(base: str, namespace: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}namespace={namespace}"


async def start_worker(url: str, spans_file: Path, *mode: str) -> tuple[asyncio.subprocess.Process, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "support")])}
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "otel_worker.py"),
        url,
        str(spans_file),
        *mode,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert worker.stdout is not None
    async with asyncio.timeout(30):
        line = (await worker.stdout.readline()).decode()
    assert line.startswith("ready "), f"the worker did not start: {line!r} (exit {worker.returncode})"
    return worker, line.split()[1]


def backend_url(scheme: str, tmp_path: Path) -> str:
    """A fresh namespace on ``scheme``'s backend; skipped (failed with CI=true) when unreachable."""
    base, port, _ = BACKENDS[scheme]
    if scheme in DISTRIBUTIONS and not installed(scheme):
        pytest.skip(f"{DISTRIBUTIONS[scheme]} is not installed")
    if port:
        require_reachable(base, port)
    return with_namespace(base.format(tmp=tmp_path), f"t{uuid.uuid4().hex[:12]}")


@pytest.mark.parametrize("scheme", list(BACKENDS))
def test_one_trace_across_two_processes(scheme: str, collector: Collector, tmp_path: Path) -> None:
    system = BACKENDS[scheme][2]
    url = backend_url(scheme, tmp_path)
    spans_file = tmp_path / "worker_spans.json"
    front = Service("front")

    async def scenario() -> int:
        priced = asyncio.get_running_loop().create_future()

        @front.on
        async def charge(command: Charge, ctx: Context) -> None:
            reply = await ctx.request(GetPrice(order=command.order), timeout=10)
            if not priced.done():
                priced.set_result(reply.cents)

        worker, worker_id = await start_worker(url, spans_file)
        try:
            async with pycomms.connect(url, services=[front]) as bus:

                async def both_present() -> bool:
                    ids = {node.id for node in await bus.nodes()}
                    return {worker_id, bus.node.id} <= ids

                await eventually(both_present, 20, "the worker and this node to see each other")
                await bus.publish(OrderPlaced(order=3))
                async with asyncio.timeout(20):
                    cents = await priced
        finally:
            await stop_worker(worker)
        await drop(url)
        return cents

    assert run_strict(scenario, 60) == 300
    spans = [span_record(s) for s in collector.spans()] + json.loads(spans_file.read_text())
    by_name = {s["name"]: s for s in spans}
    chain = [
        by_name["publish otel.order_placed"],  # here
        by_name["process otel.order_placed"],  # worker
        by_name["send otel.charge"],  # worker
        by_name["process otel.charge"],  # here
        by_name["request otel.get_price"],  # here
        by_name["process otel.get_price"],  # worker
    ]
    assert [s["kind"] for s in chain] == ["PRODUCER", "CONSUMER", "PRODUCER", "CONSUMER", "CLIENT", "SERVER"]
    assert len({s["trace_id"] for s in chain}) == 1, "the conversation is split over several traces"
    for parent, child in itertools.pairwise(chain):
        assert child["parent"] == parent["span_id"], f"{child['name']} is not a child of {parent['name']}"
    assert {s["attributes"]["messaging.system"] for s in chain} == {system}
    assert chain[1]["attributes"]["messaging.consumer.group.name"] == "back"
    assert chain[3]["attributes"]["messaging.consumer.group.name"] == "front"
    for side in chain[4:]:  # the reply: sent back by the worker's SERVER span, received by this CLIENT span
        replies = [e for e in side["events"] if e["name"] == "pycomms.reply"]
        assert [e["attributes"]["pycomms.reply.type"] for e in replies] == ["otel.price"], side["name"]
    for producer, consumer in [(chain[0], chain[1]), (chain[2], chain[3]), (chain[4], chain[5])]:
        assert producer["attributes"]["messaging.message.id"] == consumer["attributes"]["messaging.message.id"]


@pytest.mark.parametrize("scheme", list(BACKENDS))
def test_retries_and_dead_letters_in_another_process_are_events_of_one_trace(
    scheme: str, collector: Collector, tmp_path: Path
) -> None:
    """The worker fails ``OrderPlaced`` twice (a retry, then the dead letters) and
    rejects ``Charge``: each attempt is a CONSUMER span, child of this process's
    PRODUCER span, with the retry or dead-letter event naming attempt and error."""
    url = backend_url(scheme, tmp_path)
    spans_file = tmp_path / "worker_spans.json"

    async def scenario() -> None:
        worker, worker_id = await start_worker(url, spans_file, "failing")
        try:
            async with pycomms.connect(url) as bus:

                async def worker_present() -> bool:
                    return worker_id in {node.id for node in await bus.nodes()}

                await eventually(worker_present, 20, "the worker to be present")
                await bus.publish(OrderPlaced(order=5))
                await bus.send(Charge(order=6))

                async def both_dead() -> bool:
                    return all([await bus.dead_letters("flaky"), await bus.dead_letters("poison")])

                await eventually(both_dead, 30, "a dead letter in each of the worker's services")
        finally:
            await stop_worker(worker)
        await drop(url)

    run_strict(scenario, 60)
    publish = span_record(collector.span("publish otel.order_placed"))
    send = span_record(collector.span("send otel.charge"))
    worker_spans = json.loads(spans_file.read_text())
    attempts = sorted(
        (s for s in worker_spans if s["name"] == "process otel.order_placed"),
        key=lambda s: s["attributes"]["pycomms.attempt"],
    )
    assert [s["attributes"]["pycomms.attempt"] for s in attempts] == [1, 2]
    for attempt in attempts:
        assert (attempt["trace_id"], attempt["parent"]) == (publish["trace_id"], publish["span_id"])
        assert attempt["status"] == "ERROR"
        assert attempt["attributes"]["error.type"] == "ValueError"
    first, last = ([(e["name"], e["attributes"]) for e in a["events"] if e["name"] != "exception"] for a in attempts)
    assert [(name, attrs["pycomms.attempt"], attrs["error.type"]) for name, attrs in first] == [
        ("pycomms.retry", 1, "ValueError")
    ]
    assert "order 5 is broken" in str(first[0][1]["exception.message"])
    assert [(name, attrs["pycomms.attempt"], attrs["pycomms.dead_letter.reason"]) for name, attrs in last] == [
        ("pycomms.dead_letter", 2, "failed")
    ]
    [refused] = [s for s in worker_spans if s["name"] == "process otel.charge"]
    assert (refused["trace_id"], refused["parent"]) == (send["trace_id"], send["span_id"])
    reasons = [
        e["attributes"]["pycomms.dead_letter.reason"] for e in refused["events"] if e["name"] == "pycomms.dead_letter"
    ]
    assert reasons == ["rejected"]


async def stop_worker(worker: asyncio.subprocess.Process) -> None:
    """SIGTERM (the worker closes its bus and writes its spans); killed if it hangs."""
    if worker.returncode is None:
        worker.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(20):
            await worker.wait()
    except TimeoutError:
        worker.kill()
        await worker.wait()
        raise


async def drop(url: str) -> None:
    bus: Any = await pycomms.connect(url)
    await bus.drop_namespace(force=True)
