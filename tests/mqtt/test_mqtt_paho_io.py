"""`coalesce`: runs of QoS 1 PUBLISH and PUBACK packets of paho's outgoing queue become one
packet each, in order; a packet paho acts on after writing (QoS 0 PUBLISH, DISCONNECT,
SUBSCRIBE) and one already partly written stay as they are (pure logic)."""

from __future__ import annotations

from collections import deque
from typing import Any

from pycomms_mqtt._paho_io import coalesce


def _packet(command: int, data: bytes, *, qos: int = 1, pos: int = 0) -> dict[str, Any]:
    return {
        "command": command,
        "mid": 1,
        "qos": qos,
        "pos": pos,
        "to_process": len(data) - pos,
        "packet": data,
        "info": None,
    }


def test_runs_are_joined_in_order_and_the_others_kept() -> None:
    partly = _packet(0x32, b"P0xx", pos=2)
    qos0 = _packet(0x30, b"Q0", qos=0)
    subscribe = _packet(0x82, b"SUB")
    queue: deque[Any] = deque(
        [
            partly,
            _packet(0x32, b"P1"),
            _packet(0x40, b"A1"),
            qos0,
            _packet(0x32, b"P2"),
            subscribe,
            _packet(0x40, b"A2"),
        ]
    )
    coalesce(queue)
    out = list(queue)
    assert out[0] is partly
    assert (out[1]["packet"], out[1]["to_process"], out[1]["pos"]) == (b"P1A1", 4, 0)
    assert out[2] is qos0
    assert out[3]["packet"] == b"P2"
    assert out[4] is subscribe
    assert out[5]["packet"] == b"A2"
    assert len(out) == 6
    assert b"".join(bytes(p["packet"][p["pos"] :]) for p in out) == b"xxP1A1Q0P2SUBA2"
