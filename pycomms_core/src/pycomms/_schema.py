"""Message contracts as documents: JSON Schema and AsyncAPI 3.0, and a breaking-change diff."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

from . import __version__
from ._envelope import SPEC_VERSION, WIRE_VERSION
from ._errors import PyCommsError
from ._messages import Message, is_message_type
from ._service import Service


def collect(module: ModuleType) -> dict[str, type[Message]]:
    """Every message type a module defines or its services handle, by type name
    (request reply types included)."""
    found: dict[str, type[Message]] = {}

    def add(cls: type[Message]) -> None:
        known = found.setdefault(cls.type_name, cls)
        if known is not cls:
            raise PyCommsError(f"two classes use the message type name {cls.type_name!r}: {known} and {cls}")
        reply = getattr(cls, "reply_type", None)
        if reply is not None and is_message_type(reply):
            add(reply)

    for _, value in inspect.getmembers(module):
        if is_message_type(value):
            add(value)
        elif isinstance(value, Service):
            for spec in value.handlers.values():
                add(spec.message_type)
    return dict(sorted(found.items()))


def json_schemas(types: dict[str, type[Message]]) -> dict[str, Any]:
    """``{"pycomms": version, "wire": 2, "messages": {type name: {"kind": ..., "schema": ...}}}``."""
    return {
        "pycomms": __version__,
        "wire": WIRE_VERSION,
        "messages": {
            name: {"kind": cls.kind, "schema": cls.model_json_schema(ref_template="#/$defs/{model}")}
            for name, cls in types.items()
        },
    }


def asyncapi(types: dict[str, type[Message]], title: str) -> dict[str, Any]:
    """An AsyncAPI 3.0 document: a channel and a message per type, operations by kind."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for name, cls in types.items():
        key = _key(name)
        schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas[def_name] = definition
        schemas[key] = schema
        messages[key] = {
            "name": name,
            "title": cls.__name__,
            "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{key}"},
            "x-pycomms-kind": cls.kind,
        }
        channels[key] = {
            "address": name,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "description": _CHANNEL_TEXT[cls.kind],
        }
        if cls.kind in ("event", "command", "request"):
            operation: dict[str, Any] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"handle {name}",
            }
            reply = getattr(cls, "reply_type", None)
            if cls.kind == "request" and reply is not None:
                operation["reply"] = {"channel": {"$ref": f"#/channels/{_key(reply.type_name)}"}}
            operations[f"handle_{key}"] = operation
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": "1.0.0",
            "x-generator": f"pycomms {__version__}",
            "x-pycomms-wire": WIRE_VERSION,
            "description": f"Messages travel as CloudEvents {SPEC_VERSION} events (PyComms wire {WIRE_VERSION}); "
            "each payload schema is the event's data.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


_CHANNEL_TEXT = {
    "event": "fan-out: one copy to every service that handles the type",
    "command": "point-to-point: one instance of the service that handles the type",
    "request": "request/reply: one instance answers to the requesting node",
    "message": "payload (e.g. a reply) sent straight to the requesting node",
    "reply": "reply",
}


def _key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


def diff(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Compare two `json_schemas` documents: (breaking changes, compatible changes)."""
    breaking: list[str] = []
    compatible: list[str] = []
    old_messages, new_messages = old.get("messages", {}), new.get("messages", {})
    for name in sorted(old_messages.keys() - new_messages.keys()):
        breaking.append(f"{name}: message type removed")
    for name in sorted(new_messages.keys() - old_messages.keys()):
        compatible.append(f"{name}: message type added")
    for name in sorted(old_messages.keys() & new_messages.keys()):
        before, after = old_messages[name], new_messages[name]
        if before.get("kind") != after.get("kind"):
            breaking.append(f"{name}: kind changed from {before.get('kind')} to {after.get('kind')}")
        _diff_object(name, before["schema"], after["schema"], breaking, compatible)
    return breaking, compatible


def _diff_object(path: str, old: dict[str, Any], new: dict[str, Any], breaking: list[str], ok: list[str]) -> None:
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    for field in sorted(old_props.keys() - new_props.keys()):
        breaking.append(f"{path}.{field}: field removed")
    for field in sorted(new_props.keys() - old_props.keys()):
        if field in new_required:
            breaking.append(f"{path}.{field}: new required field")
        else:
            ok.append(f"{path}.{field}: optional field added")
    for field in sorted(old_props.keys() & new_props.keys()):
        if _shape(old_props[field]) != _shape(new_props[field]):
            breaking.append(
                f"{path}.{field}: type changed from {_shape(old_props[field])} to {_shape(new_props[field])}"
            )
        if field in new_required and field not in old_required:
            breaking.append(f"{path}.{field}: became required")


def _shape(prop: dict[str, Any]) -> str:
    """A comparable description of a property's type (ignoring titles and defaults)."""
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " | ".join(sorted(_shape(p) for p in prop["anyOf"]))
    kind = str(prop.get("type", "any"))
    if kind == "array":
        return f"array[{_shape(prop.get('items', {}))}]"
    if kind == "object" and "additionalProperties" in prop and isinstance(prop["additionalProperties"], dict):
        return f"object[{_shape(prop['additionalProperties'])}]"
    if "enum" in prop:
        return f"enum{sorted(map(str, prop['enum']))}"
    return kind
