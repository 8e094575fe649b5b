"""Every subject, stream, consumer and bucket name of a namespace (docs/interop/nats.md lists them).

A namespace ``ns`` becomes the token ``ns`` itself when it holds only letters, digits,
``_`` and ``-``; otherwise ``_`` is written ``__`` and ``.`` is written ``_d``, so that
the token is a valid stream and bucket name and two namespaces never share one.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

_PLAIN = re.compile(r"[A-Za-z0-9_\-]")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_\-]")


def namespace_token(namespace: str) -> str:
    """``namespace`` as a name token: injective, only ``[A-Za-z0-9_-]``."""
    return namespace.replace("_", "__").replace(".", "_d")


@functools.lru_cache(maxsize=4096)
def subject_token(name: str) -> str:
    """A message type or service name as subject tokens.

    Letters, digits, ``_``, ``-`` and dots between non-empty tokens stay as they are
    (``shop.order_placed`` is two tokens); any other character is written ``%XX`` (its
    UTF-8 bytes), and all dots too when one would leave an empty token. Injective: a
    name written plainly never holds ``%``.
    """
    out = "".join(c if _PLAIN.match(c) or c == "." else "".join(f"%{b:02X}" for b in c.encode()) for c in name)
    if not out or "" in out.split("."):
        out = out.replace(".", "%2E") or "%"
    return out


@dataclass(frozen=True, slots=True)
class Names:
    """The names of one namespace on the server."""

    namespace: str
    token: str

    @classmethod
    def for_namespace(cls, namespace: str) -> Names:
        return cls(namespace, namespace_token(namespace))

    @property
    def prefix(self) -> str:
        return f"pycomms.{self.token}"

    @property
    def events_stream(self) -> str:
        """Interest retention: an event is kept until every service consumer that wants it acked it."""
        return f"PYCOMMS_{self.token}_EVENTS"

    @property
    def work_stream(self) -> str:
        """Work-queue retention: commands, requests and per-service replays, kept until handled."""
        return f"PYCOMMS_{self.token}_WORK"

    @property
    def dead_letter_stream(self) -> str:
        return f"PYCOMMS_{self.token}_DLQ"

    @property
    def presence_bucket(self) -> str:
        return f"PYCOMMS_{self.token}_NODES"

    def streams(self) -> tuple[str, str, str]:
        return (self.events_stream, self.work_stream, self.dead_letter_stream)

    def event(self, type_name: str) -> str:
        return f"{self.prefix}.e.{subject_token(type_name)}"

    def command(self, type_name: str) -> str:
        return f"{self.prefix}.c.{subject_token(type_name)}"

    def service(self, service: str) -> str:
        """Where replays of ``service``'s dead letters go (its own consumer reads it)."""
        return f"{self.prefix}.s.{subject_token(service)}"

    def dead_letters(self, service: str) -> str:
        return f"{self.prefix}.d.{subject_token(service)}"

    def replies(self, node_id: str) -> str:
        """A plain NATS subject (no stream): replies to node ``node_id``."""
        return f"{self.prefix}.r.{subject_token(node_id)}"

    def consumer(self, service: str, subject: str) -> str:
        """The durable consumer of ``service`` on ``subject``: readable prefix, unique hash."""
        readable = _SAFE_NAME.sub("_", service)[:32]
        digest = hashlib.sha1(f"{service}\n{subject}".encode()).hexdigest()[:12]
        return f"{readable}-{digest}"
