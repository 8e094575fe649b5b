"""The second process of the cross-process trace tests.

    python otel_worker.py URL SPANS_FILE

Instruments PyComms with the SDK's in-memory span exporter, serves service ``back``
(``OrderPlaced`` -> sends ``Charge``; answers ``GetPrice``), prints ``ready NODE_ID``,
and on SIGTERM closes the bus and writes its finished spans to SPANS_FILE as JSON.
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
from pycomms import Context, Service
from pycomms_otel import PyCommsInstrumentor


async def main(url: str, spans_file: Path) -> None:
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

    async with pycomms.connect(url, services=[back]) as bus:
        print(f"ready {bus.node.id}", flush=True)
        await bus.serve(grace=5.0)
    dump_spans(list(exporter.get_finished_spans()), spans_file)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
