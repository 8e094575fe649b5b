"""What the Redis transport declares (kept apart so the plugin can show it without importing redis-py)."""

from __future__ import annotations

from pycomms import Capabilities

CAPABILITIES = Capabilities(
    retention=True,
    persistent=True,
    delayed_delivery=True,
    ordering=False,
    presence=True,
    cross_process=True,
    transactional_publish=False,
)
"""``persistent`` holds with AOF on; the transport reports False at open when the server has none."""
