"""Spans and metrics on ``memory://`` (one process): the trace of a conversation, the
retry and dead-letter events, batches, baggage, metric names and units, and that an
uninstrumented or no-op set-up wraps nothing."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import Collector
from opentelemetry import baggage, context, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from otel_messages import Charge, GetPrice, OrderPlaced, Price

import pycomms
from pycomms import Context, Reject, Retry, RetryLater, Service
from pycomms.testing import eventually, run_strict
from pycomms_otel import PyCommsInstrumentor


def memory_url() -> str:
    return f"memory://otel-{uuid.uuid4().hex[:8]}"


def test_a_conversation_is_one_trace_of_producer_consumer_client_server_spans(collector: Collector) -> None:
    shop = Service("shop")

    async def scenario() -> None:
        done = asyncio.get_running_loop().create_future()

        @shop.on
        async def placed(event: OrderPlaced, ctx: Context) -> None:
            await ctx.send(Charge(order=event.order))

        @shop.on
        async def charge(command: Charge, ctx: Context) -> None:
            reply = await ctx.request(GetPrice(order=command.order), timeout=5)
            done.set_result(reply.cents)

        @shop.on
        async def price(request: GetPrice) -> Price:
            return Price(cents=100 * request.order)

        async with pycomms.connect(memory_url(), services=[shop]) as bus:
            await bus.publish(OrderPlaced(order=7))
            assert await done == 700

    run_strict(scenario, 10)
    publish = collector.span("publish otel.order_placed")
    placed = collector.span("process otel.order_placed")
    send = collector.span("send otel.charge")
    charged = collector.span("process otel.charge")
    request = collector.span("request otel.get_price")
    priced = collector.span("process otel.get_price")
    chain = [publish, placed, send, charged, request, priced]
    assert [s.kind for s in chain] == [
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.CLIENT,
        SpanKind.SERVER,
    ]
    assert len({s.context.trace_id for s in chain if s.context}) == 1
    assert publish.parent is None
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert parent.context is not None
        assert child.parent.span_id == parent.context.span_id, f"{child.name} is not a child of {parent.name}"
    attrs = placed.attributes or {}
    assert attrs["messaging.system"] == "memory"
    assert attrs["messaging.destination.name"] == "otel.order_placed"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.consumer.group.name"] == "shop"
    assert len(str(attrs["messaging.message.id"])) == 32
    assert (publish.attributes or {})["messaging.operation.type"] == "send"
    for producer, consumer in [(publish, placed), (send, charged), (request, priced)]:
        sent_id = (producer.attributes or {})["messaging.message.id"]
        assert sent_id == (consumer.attributes or {})["messaging.message.id"], producer.name
    assert all(s.status.status_code is StatusCode.UNSET for s in chain)
    for side in (request, priced):  # the reply: handed back by the SERVER span, received by the CLIENT span
        [reply] = [e for e in side.events if e.name == "pycomms.reply"]
        assert (reply.attributes or {})["pycomms.reply.type"] == "otel.price"


def test_retries_and_dead_letters_are_span_events_with_attempt_and_error(collector: Collector) -> None:
    flaky = Service("flaky", retry=Retry(max_attempts=2, delay=0.01, jitter=0))
    poison = Service("poison")

    async def scenario() -> None:
        @flaky.on
        async def fail(event: OrderPlaced) -> None:
            raise ValueError(f"order {event.order} is broken")

        @poison.on
        async def refuse(command: Charge) -> None:
            raise Reject("never valid")

        async with pycomms.connect(memory_url(), services=[flaky, poison]) as bus:
            await bus.publish(OrderPlaced(order=1))
            await bus.send(Charge(order=2))

            async def both_dead() -> bool:
                return all([await bus.dead_letters("flaky"), await bus.dead_letters("poison")])

            await eventually(both_dead, 10, "a dead letter in each service")

    run_strict(scenario, 10)
    attempts = sorted(
        (s for s in collector.spans() if s.name == "process otel.order_placed"),
        key=lambda s: (s.attributes or {})["pycomms.attempt"],
    )
    assert [(s.attributes or {})["pycomms.attempt"] for s in attempts] == [1, 2]
    first, last = attempts
    assert first.status.status_code is StatusCode.ERROR
    assert (first.attributes or {})["error.type"] == "ValueError"
    [retry] = [e for e in first.events if e.name == "pycomms.retry"]
    assert (retry.attributes or {})["pycomms.attempt"] == 1
    assert (retry.attributes or {})["error.type"] == "ValueError"
    assert "order 1 is broken" in str((retry.attributes or {})["exception.message"])
    [dead] = [e for e in last.events if e.name == "pycomms.dead_letter"]
    assert (dead.attributes or {})["pycomms.attempt"] == 2
    assert (dead.attributes or {})["pycomms.dead_letter.reason"] == "failed"
    refused = collector.span("process otel.charge")
    [dead] = [e for e in refused.events if e.name == "pycomms.dead_letter"]
    assert (dead.attributes or {})["pycomms.dead_letter.reason"] == "rejected"
    retried = sum(p.value for p in collector.points("pycomms.messages.retried"))
    assert retried == 1
    dead_letters = {
        p.attributes["messaging.consumer.group.name"]: p.value
        for p in collector.points("pycomms.messages.dead_lettered")
    }
    assert dead_letters == {"flaky": 1, "poison": 1}


def test_metric_names_units_and_attributes(collector: Collector) -> None:
    shop = Service("shop")

    async def scenario() -> None:
        handled = asyncio.get_running_loop().create_future()

        @shop.on
        async def placed(event: OrderPlaced) -> None:
            if not handled.done():
                handled.set_result(None)

        async with pycomms.connect(memory_url(), services=[shop]) as bus:
            await bus.publish(OrderPlaced(order=1))
            await handled

    run_strict(scenario, 10)
    metrics_by_name = collector.metrics()
    units = {name: metric.unit for name, metric in metrics_by_name.items()}
    assert units == {
        "messaging.client.sent.messages": "{message}",
        "messaging.client.operation.duration": "s",
        "messaging.client.consumed.messages": "{message}",
        "messaging.process.duration": "s",
        "pycomms.handlers.active": "{handler}",
    }
    [sent] = collector.points("messaging.client.sent.messages")
    assert sent.value == 1
    assert sent.attributes["messaging.destination.name"] == "otel.order_placed"
    assert sent.attributes["messaging.operation.name"] == "publish"
    [consumed] = collector.points("messaging.client.consumed.messages")
    assert consumed.value == 1
    assert consumed.attributes["messaging.consumer.group.name"] == "shop"
    [duration] = collector.points("messaging.process.duration")
    assert duration.count == 1
    assert duration.sum >= 0
    [active] = collector.points("pycomms.handlers.active")
    assert active.value == 0  # back to zero once the handler returned


def test_a_batch_links_one_create_span_per_message_and_baggage_travels(collector: Collector) -> None:
    shop = Service("shop")
    seen: list[tuple[str | None, dict[str, str]]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        all_seen = loop.create_future()

        @shop.on
        async def placed(event: OrderPlaced, ctx: Context) -> None:
            seen.append((str(baggage.get_baggage("tenant")), dict(ctx.headers)))
            if len(seen) == 3:
                all_seen.set_result(None)

        async with pycomms.connect(memory_url(), services=[shop]) as bus:
            token = context.attach(baggage.set_baggage("tenant", "acme"))
            try:
                with collector.tracer_provider.get_tracer("test").start_as_current_span("checkout"):
                    await bus.publish(*(OrderPlaced(order=n) for n in range(3)), headers={"origin": "test"})
            finally:
                context.detach(token)
            await all_seen

    run_strict(scenario, 10)
    publish = collector.span("publish otel.order_placed")
    assert publish.kind is SpanKind.CLIENT  # its context is not the messages' creation context
    assert (publish.attributes or {})["messaging.batch.message_count"] == 3
    creates = [s for s in collector.spans() if s.name == "create otel.order_placed"]
    assert len(creates) == 3
    assert all(s.kind is SpanKind.PRODUCER for s in creates)
    assert all((s.attributes or {})["messaging.operation.type"] == "create" for s in creates)
    create_ids = {s.context.span_id for s in creates if s.context}
    assert {link.context.span_id for link in publish.links} == create_ids
    processed = [s for s in collector.spans() if s.name == "process otel.order_placed"]
    assert len(processed) == 3
    assert {s.parent.span_id for s in processed if s.parent} == create_ids  # each its own creation context
    message_ids = {s.context.span_id: (s.attributes or {})["messaging.message.id"] for s in creates if s.context}
    for handled in processed:
        assert handled.parent is not None
        assert message_ids[handled.parent.span_id] == (handled.attributes or {})["messaging.message.id"]
    assert "messaging.message.id" not in (publish.attributes or {})
    checkout = collector.span("checkout")
    assert checkout.context is not None
    assert {s.parent.span_id for s in [publish, *creates] if s.parent} == {checkout.context.span_id}
    assert len({s.context.trace_id for s in [checkout, publish, *creates, *processed] if s.context}) == 1
    for tenant, headers in seen:
        assert tenant == "acme"
        assert headers["origin"] == "test"
        assert set(headers) == {"origin", "traceparent", "baggage"}
        assert all(name.isalnum() and name.islower() for name in headers)


def test_a_failed_request_marks_the_client_span(collector: Collector) -> None:
    async def scenario() -> None:
        async with pycomms.connect(memory_url()) as bus:
            with pytest.raises(pycomms.RequestTimeout):
                await bus.request(GetPrice(order=1), timeout=0.05)

    run_strict(scenario, 10)
    request = collector.span("request otel.get_price")
    assert request.kind is SpanKind.CLIENT
    assert request.status.status_code is StatusCode.ERROR
    assert (request.attributes or {})["error.type"] == "pycomms._errors.RequestTimeout"


def test_no_op_or_unset_providers_and_uninstrument_wrap_nothing() -> None:
    instrumentor = PyCommsInstrumentor()
    shop = Service("shop")

    @shop.on
    async def placed(event: OrderPlaced) -> None:
        return None

    async def wrapped() -> bool:
        """Whether the bus's outgoing path is wrapped (a private look: zero cost is the point)."""
        async with pycomms.connect(memory_url(), services=[shop]) as bus:
            return bool(bus._emit_out != bus._emit)

    instrumentor.instrument(tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider())
    try:
        assert run_strict(wrapped, 10) is False
    finally:
        instrumentor.uninstrument()
    assert run_strict(wrapped, 10) is False
    # the global providers while no SDK is set up (the API's proxies): nothing to record either
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    instrumentor.instrument()
    try:
        assert run_strict(wrapped, 10) is False
    finally:
        instrumentor.uninstrument()
    collector_provider = TracerProvider()
    instrumentor.instrument(tracer_provider=collector_provider)
    try:
        assert run_strict(wrapped, 10) is True
    finally:
        instrumentor.uninstrument()
        collector_provider.shutdown()


def test_uninstrument_stops_recording_on_an_open_bus(collector: Collector) -> None:
    async def scenario() -> None:
        async with pycomms.connect(memory_url()) as bus:
            await bus.publish(OrderPlaced(order=1))
            PyCommsInstrumentor().uninstrument()
            await bus.publish(OrderPlaced(order=2))

    run_strict(scenario, 10)
    assert [s.name for s in collector.spans()] == ["publish otel.order_placed"]


def test_opentelemetry_instrument_picks_pycomms_up_by_its_entry_point() -> None:
    """Zero-code: ``opentelemetry-instrument python app.py`` with an app that never
    mentions OpenTelemetry; the console exporter prints the PyComms spans."""
    here = Path(__file__).parent
    command = [str(Path(sys.executable).with_name("opentelemetry-instrument"))]
    command += ["--traces_exporter", "console", "--metrics_exporter", "none", "--logs_exporter", "none"]
    command += [sys.executable, str(here / "otel_auto.py")]
    env = {**os.environ, "PYTHONPATH": str(here), "OTEL_SERVICE_NAME": "auto-test"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"name": "publish otel.order_placed"' in done.stdout
    assert '"name": "process otel.order_placed"' in done.stdout
    assert '"kind": "SpanKind.CONSUMER"' in done.stdout


def test_installed_but_not_instrumented_imports_no_opentelemetry() -> None:
    """The plugin is loaded by every bus; until `instrument()` it must cost nothing,
    not even the import of OpenTelemetry."""
    code = (
        "import asyncio, sys\n"
        "import pycomms\n"
        "async def main():\n"
        "    async with pycomms.connect('memory://quiet'):\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "import pycomms._plugins as p\n"
        "assert p.plugin_manager().get_plugin('otel') is not None, 'pycomms-otel is not loaded'\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_retry_later_is_a_retry_event_not_an_error(collector: Collector) -> None:
    patient = Service("patient", retry=Retry(max_attempts=3, delay=0.01, jitter=0))

    async def scenario() -> None:
        done = asyncio.get_running_loop().create_future()

        @patient.on
        async def wait(event: OrderPlaced, ctx: Context) -> None:
            if ctx.attempt == 1:
                raise RetryLater(0.01)
            done.set_result(ctx.attempt)

        async with pycomms.connect(memory_url(), services=[patient]) as bus:
            await bus.publish(OrderPlaced(order=1))
            assert await done == 2

    run_strict(scenario, 10)
    first, second = sorted(
        (s for s in collector.spans() if s.name == "process otel.order_placed"),
        key=lambda s: (s.attributes or {})["pycomms.attempt"],
    )
    [retry] = first.events
    assert retry.name == "pycomms.retry"
    assert (retry.attributes or {})["pycomms.retry.delay"] == 0.01
    assert first.status.status_code is StatusCode.UNSET
    assert "error.type" not in (first.attributes or {})
    assert second.status.status_code is StatusCode.UNSET
    assert not second.events


def test_metrics_without_tracing_add_no_headers() -> None:
    """``pycomms run --metrics-port`` without a tracing SDK: counted, no span, no header."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = PyCommsInstrumentor()
    instrumentor.instrument(meter_provider=meter_provider)
    shop = Service("shop")
    seen: list[dict[str, str]] = []

    async def scenario() -> None:
        done = asyncio.get_running_loop().create_future()

        @shop.on
        async def placed(event: OrderPlaced, ctx: Context) -> None:
            seen.append(dict(ctx.headers))
            done.set_result(None)

        async with pycomms.connect(memory_url(), services=[shop]) as bus:
            await bus.publish(OrderPlaced(order=1))
            await done

    try:
        run_strict(scenario, 10)
        data = reader.get_metrics_data()
    finally:
        instrumentor.uninstrument()
        meter_provider.shutdown()
    assert seen == [{}]
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"messaging.client.consumed.messages", "messaging.process.duration"} <= names
