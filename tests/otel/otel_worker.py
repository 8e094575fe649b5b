"""The second process of the cross-process trace tests.

    python otel_worker.py URL SPANS_FILE [failing]

Instruments PyComms with the SDK's in-memory span exporter, serves service ``back``
(``OrderPlaced`` -> sends ``Charge``; answers ``GetPrice``), prints ``ready NODE_ID``,
and on SIGTERM closes the bus and writes its finished spans to SPANS_FILE as JSON.
With ``failing`` it serves ``flaky`` instead (``OrderPlaced`` always fails: one retry,
then the dead letters) and ``poison`` (``Charge`` is rejected at once).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_messages import Charge, GetPrice, OrderPlaced, Price, dump_spans

import pycomms
from pycomms import Context, Reject, Retry, Service
from pycomms_otel import PyCommsInstrumentor


def failing_services() -> list[Service]:
    flaky = Service("flaky", retry=Retry(max_attempts=2, delay=0.05, jitter=0))
    poison = Service("poison")

    @flaky.on
    async def fail(event: OrderPlaced) -> None:
        raise ValueError(f"order {event.order} is broken")

    @poison.on
    async def refuse(command: Charge) -> None:
        raise Reject("never valid")

    return [flaky, poison]


async def main(url: str, spans_file: Path, failing: bool) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    PyCommsInstrumentor().instrument(tracer_provider=provider)
    back = Service("back")

    @back.on
    async def placed(event: OrderPlaced, ctx: Context) -> None:
        await ctx.send(Charge(order=event.order))

    @back.on
    async def price(request: GetPrice) -> Price:
        return Price(cents=100 * request.order)

    async with pycomms.connect(url, services=failing_services() if failing else [back]) as bus:
        print(f"ready {bus.node.id}", flush=True)
        await bus.serve(grace=5.0)
    dump_spans(list(exporter.get_finished_spans()), spans_file)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:] == ["failing"]))
