"""The versioned handshake: identity, namespace, protocol version and HMAC proof.

Dialer ``D`` and listener ``L`` exchange::

    D -> L  HELLO {proto, namespace, id, nonce}
    L -> D  HELLO {proto, namespace, id, nonce, mac}        mac = proof("listener")
    D -> L  AUTH  {mac}                                     mac = proof("dialer")
    both    STATE {...}   (L only after it verified D's AUTH)

``proof(role) = HMAC-SHA256(secret, "pycomms-tcp/1|" role "|" namespace "|" D.nonce "|"
L.nonce "|" D.id "|" L.id)`` as lowercase hex; without a secret ``mac`` is "". Fresh
random nonces on both sides make a recorded handshake useless on a new connection.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from ._frames import ProtocolError

PROTOCOL_VERSION = 2
"""2: MSG frames carry CloudEvents envelopes (PyComms wire 2); 1 carried wire-1 envelopes."""
NONCE_BYTES = 16


@dataclass(frozen=True, slots=True)
class Hello:
    """A parsed HELLO frame."""

    proto: int
    namespace: str
    id: str
    nonce: str
    mac: str

    def to_json(self) -> dict[str, Any]:
        return {"proto": self.proto, "namespace": self.namespace, "id": self.id, "nonce": self.nonce, "mac": self.mac}


def new_nonce() -> str:
    return os.urandom(NONCE_BYTES).hex()


def parse_hello(raw: dict[str, Any]) -> Hello:
    """Validate the shape of a HELLO; raises `ProtocolError`."""
    try:
        proto = raw["proto"]
        namespace, node_id, nonce = raw["namespace"], raw["id"], raw["nonce"]
        mac = raw.get("mac", "")
    except KeyError as exc:
        raise ProtocolError(f"HELLO lacks {exc.args[0]!r}") from None
    if not isinstance(proto, int):
        raise ProtocolError("HELLO proto is not an integer")
    for name, value in (("namespace", namespace), ("id", node_id), ("nonce", nonce), ("mac", mac)):
        if not isinstance(value, str) or len(value) > 256:
            raise ProtocolError(f"HELLO {name} is not a short string")
    if len(nonce) != NONCE_BYTES * 2:
        raise ProtocolError("HELLO nonce has the wrong length")
    return Hello(proto, namespace, node_id, nonce, mac)


def proof(secret: str | None, role: str, namespace: str, dialer: tuple[str, str], listener: tuple[str, str]) -> str:
    """The HMAC a side sends to prove it knows ``secret`` ("" without a secret).

    ``dialer`` and ``listener`` are ``(node id, nonce)`` pairs.
    """
    if secret is None:
        return ""
    text = "|".join(("pycomms-tcp/1", role, namespace, dialer[1], listener[1], dialer[0], listener[0]))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def verify(expected: str, got: str) -> bool:
    """Constant-time comparison of two proofs."""
    return hmac.compare_digest(expected.encode(), got.encode())
