"""The benchmark harness (``python -m bench``) with PyComms instrumented one way:

    python pycomms_otel/tools/bench_overhead.py MODE [bench options...]

MODE ``off``: not instrumented (pycomms-otel installed, its hooks wrap nothing).
``noop``: ``instrument()`` with OpenTelemetry's no-op tracer and meter providers.
``api``: ``instrument()`` with the API's default (proxy) providers and no SDK set up.
``metrics``: only the SDK's MeterProvider (an InMemoryMetricReader), no tracing
(what ``pycomms run --metrics-port`` does when tracing is not set up).
``sdk``: the SDK's TracerProvider (always-on sampling, a SimpleSpanProcessor into an
exporter that counts and keeps nothing, so memory stays flat over 100,000s of spans)
and the SDK's MeterProvider with an InMemoryMetricReader.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from pycomms_otel import PyCommsInstrumentor


class CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    exporter = CountingExporter()
    if mode == "noop":
        PyCommsInstrumentor().instrument(
            tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
        )
    elif mode == "metrics":
        PyCommsInstrumentor().instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    elif mode == "api":
        PyCommsInstrumentor().instrument()
    elif mode == "sdk":
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        PyCommsInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    elif mode != "off":
        raise SystemExit(f"MODE must be off, noop, api, metrics or sdk, got {mode!r}")
    sys.argv = ["bench", *args]
    try:
        runpy.run_module("bench", run_name="__main__")
    finally:
        if mode == "sdk":
            print(f"bench_overhead: {exporter.count} spans exported", file=sys.stderr)


if __name__ == "__main__":
    main()
