"""The tracer, the instruments and the attribute names of the OpenTelemetry messaging
semantic conventions (the names are those of `opentelemetry.semconv`'s incubating
messaging attributes and metrics)."""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.propagators.textmap import Setter

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
KIND = "pycomms.kind"
RETRY_DELAY = "pycomms.retry.delay"
DEAD_LETTER_REASON = "pycomms.dead_letter.reason"
RETRY_EVENT = "pycomms.retry"
DEAD_LETTER_EVENT = "pycomms.dead_letter"

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


class Telemetry:
    """What the instrumentation records with: made by `PyCommsInstrumentor.instrument`.

    ``tracing``/``metering`` are False for a no-op provider, so that the hooks can
    leave buses untouched when nothing would be recorded."""

    def __init__(self, tracer_provider: trace.TracerProvider, meter_provider: metrics.MeterProvider) -> None:
        self.on = True
        self.tracing = not isinstance(tracer_provider, trace.NoOpTracerProvider)
        self.metering = not isinstance(meter_provider, metrics.NoOpMeterProvider)
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider, schema_url=SCHEMA_URL)
        self.sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="Messages a producer sent."
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Messages handed to a handler.",
        )
        self.operation_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description="Duration of publish, send and request calls (a request until its reply).",
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
        self.active = meter.create_up_down_counter(
            "pycomms.handlers.active", unit="{handler}", description="Handlers running now, per service."
        )

    @property
    def recording(self) -> bool:
        """Whether anything at all would be recorded."""
        return self.on and (self.tracing or self.metering)
