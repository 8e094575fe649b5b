"""What the NATS transport declares (kept apart so the plugin can show it without importing nats-py)."""

from __future__ import annotations

from pycomms import Capabilities

CAPABILITIES = Capabilities(
    retention=True,
    persistent=True,
    delayed_delivery=True,
    ordering=True,
    presence=True,
    cross_process=True,
    transactional_publish=False,
)
"""``persistent`` holds with ``storage=file`` (the default); the transport reports False
with ``storage=memory``. ``ordering``: one message type is one consumer, delivered in
stream order; a service with ``concurrency=1`` and one instance handles a key in order."""
