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


async def start_worker(url: str, spans_file: Path) -> tuple[asyncio.subprocess.Process, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "support")])}
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "otel_worker.py"),
        url,
        str(spans_file),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert worker.stdout is not None
    async with asyncio.timeout(30):
        line = (await worker.stdout.readline()).decode()
    assert line.startswith("ready "), f"the worker did not start: {line!r} (exit {worker.returncode})"
    return worker, line.split()[1]


@pytest.mark.parametrize("scheme", list(BACKENDS))
def test_one_trace_across_two_processes(scheme: str, collector: Collector, tmp_path: Path) -> None:
    base, port, system = BACKENDS[scheme]
    if scheme in DISTRIBUTIONS and not installed(scheme):
        pytest.skip(f"{DISTRIBUTIONS[scheme]} is not installed")
    if port:
        require_reachable(base, port)
    url = with_namespace(base.format(tmp=tmp_path), f"t{uuid.uuid4().hex[:12]}")
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
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await worker.wait()
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
    for producer, consumer in itertools.pairwise(chain[:4]):
        if producer["kind"] == "PRODUCER":
            assert producer["attributes"]["messaging.message.id"] == consumer["attributes"]["messaging.message.id"]


async def drop(url: str) -> None:
    bus: Any = await pycomms.connect(url)
    await bus.drop_namespace(force=True)
