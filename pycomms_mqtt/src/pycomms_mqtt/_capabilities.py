"""What the MQTT transport declares (apart, so the plugin can show it without importing aiomqtt)."""

from __future__ import annotations

from pycomms import Capabilities

CAPABILITIES = Capabilities(
    retention=True,
    persistent=True,
    delayed_delivery=False,
    ordering=False,
    presence=True,
    cross_process=True,
    transactional_publish=False,
)
"""``retention`` and ``persistent`` hold within the broker's own limits, which PyComms
cannot see over MQTT: a stopped service's messages wait in its persistent session, of
which Mosquitto keeps ``max_queued_messages`` (1000 by default, then it drops and logs).
``persistent`` means *as durable as the broker's persistence settings*: Mosquitto keeps
messages across a restart only with ``persistence true``, and a crash (SIGKILL) loses
what it acknowledged since its last snapshot, up to ``autosave_interval`` (1800 s by
default); with ``autosave_on_changes true`` and ``autosave_interval 1`` it snapshots after
every change and the fault test loses nothing acknowledged. MQTT has no broker-side delay
(retries wait in the client, unacked, so a crash hands them back), no negative ack and no
dead-letter queue (dead letters are retained messages). Shared subscriptions spread
messages round-robin without regard to ``key``, so no ordering is promised. See
docs/backends/mqtt.md, "Durability"."""
