"""Every topic, share group and client id of one namespace, named in one place.

Layout under ``<topic_prefix>/<namespace>/`` (each name percent-escaped, so a ``/``,
``+`` or ``#`` in a type or service name stays inside its level):

- ``e/<type>``: events; ``c/<type>``: commands and requests; ``s/<service>``: one service
  only (retries, replays);
- ``r/<node>``: replies to a node;
- ``n/<node>``: retained presence of a node (its Last Will clears it);
- ``d/<service>/<id>``: retained dead letters;
- ``k/<service>/<slot>``: retained record of a service's persistent session (for drop);
- ``p/<type>/<id>``: a retained command sent before any service subscribed to its type
  (the broker said "no matching subscribers"), taken by the first service that does.
"""

from __future__ import annotations

from dataclasses import dataclass

_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "+": "%2B", "#": "%23", "\0": "%00"})


def level(name: str) -> str:
    """``name`` as one topic level (a share group name too)."""
    return name.translate(_ESCAPES)


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    namespace: str

    @property
    def root(self) -> str:
        return f"{self.prefix}/{level(self.namespace)}"

    def event(self, type_name: str) -> str:
        return f"{self.root}/e/{level(type_name)}"

    def command(self, type_name: str) -> str:
        return f"{self.root}/c/{level(type_name)}"

    def direct(self, service: str) -> str:
        return f"{self.root}/s/{level(service)}"

    def reply(self, node_id: str) -> str:
        return f"{self.root}/r/{level(node_id)}"

    def node(self, node_id: str) -> str:
        return f"{self.root}/n/{level(node_id)}"

    @property
    def nodes(self) -> str:
        return f"{self.root}/n/+"

    def dead_letter(self, service: str, letter_id: str) -> str:
        return f"{self.root}/d/{level(service)}/{level(letter_id)}"

    def dead_letters(self, service: str) -> str:
        return f"{self.root}/d/{level(service)}/+"

    def parked(self, type_name: str, message_id: str) -> str:
        return f"{self.root}/p/{level(type_name)}/{level(message_id)}"

    def parked_all(self, type_name: str) -> str:
        return f"{self.root}/p/{level(type_name)}/+"

    def session_record(self, service: str, slot: int) -> str:
        return f"{self.root}/k/{level(service)}/{slot}"

    @property
    def session_records(self) -> str:
        return f"{self.root}/k/+/+"

    @property
    def everything(self) -> str:
        return f"{self.root}/#"

    def shared(self, service: str, topic: str) -> str:
        """The shared subscription of ``service`` to ``topic``: one copy per service."""
        return f"$share/{level(service)}/{topic}"

    def session_id(self, service: str, slot: int) -> str:
        """Client id of a service's persistent session number ``slot``."""
        return f"{self.root}/{level(service)}/{slot}"
