"""The STATE frame a node sends when a link opens (docs/tcp-protocol.md §8): read and
checked into the facts the link needs (who the peer is, where to dial it, what its
services handle, what it knows of the others)."""

from __future__ import annotations

from typing import Any

from pycomms.spi import NodeInfo


def services_of(raw: Any) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Parse ``{service: [events, commands]}`` from a STATE frame."""
    return {str(s): (frozenset(map(str, ev)), frozenset(map(str, cmd))) for s, (ev, cmd) in raw.items()}


ParsedState = tuple[
    NodeInfo,
    tuple[str, int],
    dict[str, tuple[frozenset[str], frozenset[str]]],
    dict[str, frozenset[str]],
    dict[str, tuple[frozenset[str], frozenset[str]]],
    list[tuple[str, str, int]],
]


def parse_state(peer_id: str, state: Any) -> ParsedState:
    """Read a STATE body. Only its being a JSON object is required (the minimal STATE of
    docs/tcp-protocol.md §8 is ``{}``): a missing ``info`` (or ``info.name``) names the
    node by its id, a missing ``addr`` or port 0 means "do not dial me", missing ``live``,
    ``observers``, ``catalog`` and ``peers`` are empty. Members present must be well formed."""
    if not isinstance(state, dict):
        raise TypeError(f"STATE must be a JSON object, got {type(state).__name__}")
    raw = state.get("info") or {}
    info = NodeInfo(
        id=peer_id,
        name=str(raw.get("name") or peer_id),
        services=tuple(map(str, raw.get("services", ()))),
        handles=tuple(map(str, raw.get("handles", ()))),
        host=str(raw.get("host", "")),
        pid=int(raw.get("pid", 0)),
        started_at=float(raw.get("started_at", 0.0)),
    )
    host, port = state.get("addr") or ("", 0)
    addr = (str(host), int(port))
    if not 0 <= addr[1] <= 65535:
        raise ValueError(f"STATE addr port must be 0..65535, got {addr[1]}")
    live = services_of(state.get("live") or {})
    observing = {str(s): frozenset(map(str, ev)) for s, ev in (state.get("observers") or {}).items()}
    known = services_of(state.get("catalog") or {})
    gossip = [(str(i), str(h), int(p)) for i, h, p in state.get("peers") or ()]
    return info, addr, live, observing, known, gossip
