"""The tracer, the instruments and the attribute names of the OpenTelemetry messaging
semantic conventions (the names are those of `opentelemetry.semconv`'s incubating
messaging attributes and metrics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagators.textmap import Setter

from ._backlog import Backlogs
from ._version import __version__

SCOPE = "pycomms_otel"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.28.0"

# span and metric attributes (semantic conventions, messaging)
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
OPERATION_NAME = "messaging.operation.name"
OPERATION_TYPE = "messaging.operation.type"
CONSUMER_GROUP = "messaging.consumer.group.name"
BATCH_COUNT = "messaging.batch.message_count"
CLIENT_ID = "messaging.client.id"
ERROR_TYPE = "error.type"
# PyComms' own
ATTEMPT = "pycomms.attempt"
RETRY_DELAY = "pycomms.retry.delay"
DEAD_LETTER_REASON = "pycomms.dead_letter.reason"
REPLY_TYPE = "pycomms.reply.type"
RETRY_EVENT = "pycomms.retry"
DEAD_LETTER_EVENT = "pycomms.dead_letter"
REPLY_EVENT = "pycomms.reply"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""The histogram boundaries the messaging conventions recommend, in seconds."""

_SYSTEMS = {"amqp": "rabbitmq", "amqps": "rabbitmq", "rediss": "redis", "postgres": "postgresql"}


def messaging_system(scheme: str) -> str:
    """``messaging.system`` for a backend's URL scheme: the conventions' well-known
    value where there is one (``rabbitmq``), else the scheme (``redis``, ``tcp``, ...)."""
    return _SYSTEMS.get(scheme, scheme)


class HeaderSetter(Setter[dict[str, str]]):
    """Writes propagation fields into PyComms headers. Headers travel as CloudEvents
    extension attributes, whose names are lowercase letters and digits: W3C
    ``traceparent``, ``tracestate`` and ``baggage`` are; a field that is not (e.g.
    B3's ``x-b3-traceid``) is left out rather than make the message unreadable."""

    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        if key.isalnum() and key.isascii() and key.islower():
            carrier[key] = value


SETTER = HeaderSetter()


class Tally:
    """Counts kept in plain Python, one cell per attribute set, reported by an
    observable instrument when the metrics are collected: counting a message costs
    one addition instead of an SDK measurement (which cleans and hashes its
    attributes every time)."""

    def __init__(self) -> None:
        self._rows: list[tuple[dict[str, Any], list[int]]] = []

    def cell(self, attributes: dict[str, Any]) -> list[int]:
        """A new counter cell for ``attributes``: ``cell[0] += n``."""
        cell = [0]
        self._rows.append((dict(attributes), cell))
        return cell

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(cell[0], attributes) for attributes, cell in list(self._rows)]


class Telemetry:
    """What the instrumentation records with: made by `PyCommsInstrumentor.instrument`.

    Providers given explicitly are used as they are. The global ones are looked at
    again when a bus is built (`live`): while no SDK has been set up they are the
    API's proxies, and a bus built then is not wrapped at all."""

    def __init__(
        self, tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
    ) -> None:
        self.on = True
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider, schema_url=SCHEMA_URL)
        self.sent = Tally()
        self.consumed = Tally()
        self.active = Tally()
        meter.create_observable_counter(
            "messaging.client.sent.messages",
            callbacks=[self.sent.observe],
            unit="{message}",
            description="Messages a producer sent.",
        )
        meter.create_observable_counter(
            "messaging.client.consumed.messages",
            callbacks=[self.consumed.observe],
            unit="{message}",
            description="Messages handed to a handler (every attempt).",
        )
        self.backlog = Backlogs()
        meter.create_observable_gauge(
            "pycomms.backlog",
            callbacks=[self.backlog.observe],
            unit="{message}",
            description="Messages ready for a service, not yet taken by an instance (where the backend can tell).",
        )
        meter.create_observable_up_down_counter(
            "pycomms.handlers.active",
            callbacks=[self.active.observe],
            unit="{handler}",
            description="Handlers running now, per service.",
        )
        self.operation_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description="Duration of publish and send calls (until accepted) and of requests (until the reply).",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of handling one message.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.retries = meter.create_counter(
            "pycomms.messages.retried",
            unit="{message}",
            description="Handler failures that were given another attempt.",
        )
        self.dead_letters = meter.create_counter(
            "pycomms.messages.dead_lettered",
            unit="{message}",
            description="Messages stored in a service's dead letters.",
        )

    def live(self) -> bool:
        """Whether a bus built now would record anything (see `tracing`, `metering`)."""
        return self.on and (self.tracing() or self.metering())

    def tracing(self) -> bool:
        """Whether spans would be recorded: a tracer provider that is neither a no-op
        one nor the API's proxy with no SDK behind it."""
        provider = self._tracer_provider or trace.get_tracer_provider()
        return not isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider)

    def metering(self) -> bool:
        """The same for metrics (the API's proxy meter provider is private: known by
        its class name)."""
        provider = self._meter_provider or metrics.get_meter_provider()
        return not isinstance(provider, metrics.NoOpMeterProvider) and type(provider).__name__ != "_ProxyMeterProvider"


class _NoSpan:
    """Stands for ``start_as_current_span`` on a bus built without tracing."""

    def __enter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc_info: object) -> None:
        return None


NO_SPAN = _NoSpan()
