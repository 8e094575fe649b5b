"""Length-prefixed frames: the unit of everything sent on a peer link.

A frame is ``u32 length`` (big-endian, counting the bytes after it), one type byte,
then ``length - 1`` bytes of payload. The decoder checks ``length`` against its limit
before buffering a single byte of the payload, so a peer cannot make it allocate more
than the limit. See docs/tcp-protocol.md.
"""

from __future__ import annotations

import enum
import struct
from typing import Any

from pydantic_core import from_json, to_json

from pycomms import PyCommsError

HEADER = struct.Struct(">IB")
_SEQ = struct.Struct(">Q")
_SEQ_ATTEMPT = struct.Struct(">QI")
_DELIVER = struct.Struct(">QIH")
_HANDOFF = struct.Struct(">QIHH")
_NO_KEY = 0xFFFF


class ProtocolError(PyCommsError):
    """A peer sent bytes that break the protocol; the link is closed."""


class Frame(enum.IntEnum):
    """Frame type bytes."""

    HELLO = 1
    AUTH = 2
    STATE = 3
    PING = 4
    DELIVER = 5
    ACK = 6
    RELEASE = 7
    REPLY = 8
    SUBSCRIBE = 9
    SUBSCRIBED = 10
    UNSUBSCRIBE = 11
    RPC = 12
    RPC_RESULT = 13
    BYE = 14
    ERROR = 15
    HANDOFF = 16
    HANDED = 17
    DEAD_HANDOFF = 18


_KNOWN = frozenset(int(f) for f in Frame)


def frame(kind: Frame, payload: bytes = b"") -> bytes:
    """Encode one frame."""
    return HEADER.pack(len(payload) + 1, kind) + payload


def json_frame(kind: Frame, body: Any) -> bytes:
    """Encode one frame whose payload is a JSON document."""
    return frame(kind, to_json(body))


def parse_json(payload: bytes) -> dict[str, Any]:
    """Decode a JSON object payload; raises `ProtocolError`."""
    try:
        value = from_json(payload)
    except ValueError as exc:
        raise ProtocolError(f"frame payload is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("frame payload is not a JSON object")
    return value


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames back.

    ``max_frame`` bounds ``length``; it may be raised after the handshake. Any
    violation raises `ProtocolError` and leaves the decoder unusable.
    """

    __slots__ = ("_buf", "max_frame", "partial")

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame
        self.partial = False
        """True while part of a frame is buffered."""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        frames: list[tuple[int, bytes]] = []
        if not buf:  # the common read: whole frames, nothing buffered; cut from ``data`` itself
            pos, end, max_frame = 0, len(data), self.max_frame
            while end - pos >= 5:
                length, kind = HEADER.unpack_from(data, pos)
                stop = pos + 4 + length
                if stop > end or not 1 <= length <= max_frame or kind not in _KNOWN:
                    break  # the rest (a partial frame, or a bad one) goes the buffered way below
                frames.append((kind, data[pos + 5 : stop]))  # one copy
                pos = stop
            if pos == end:
                return frames
            if pos:
                data = data[pos:]
        buf += data
        pos = 0
        end = len(buf)
        with memoryview(buf) as view:  # released before the buffer is resized below
            while end - pos >= 5:
                length, kind = HEADER.unpack_from(buf, pos)
                if length < 1 or length > self.max_frame:
                    raise ProtocolError(f"frame length {length} outside 1..{self.max_frame}")
                if kind not in _KNOWN:
                    raise ProtocolError(f"unknown frame type {kind}")
                stop = pos + 4 + length
                if stop > end:
                    break
                frames.append((kind, view[pos + 5 : stop].tobytes()))  # one copy
                pos = stop
        if end - pos == 4:
            # a lone length prefix is checked before the type byte arrives
            (length,) = struct.unpack_from(">I", buf, pos)
            if length < 1 or length > self.max_frame:
                raise ProtocolError(f"frame length {length} outside 1..{self.max_frame}")
        if pos:
            del buf[:pos]
        self.partial = bool(buf)
        return frames


def deliver_payload(seq: int, attempt: int, service: str, data: bytes) -> bytes:
    name = service.encode()
    return _DELIVER.pack(seq, attempt, len(name)) + name + data


_DELIVER_FRAME = struct.Struct(">IBQIH")
_DELIVER_TYPE = int(Frame.DELIVER)


def deliver_frame(seq: int, attempt: int, service: bytes, data: bytes) -> bytes:
    """A whole DELIVER frame (``service`` encoded) in one pack: the hot path of sending."""
    head = _DELIVER_FRAME.pack(_DELIVER.size + 1 + len(service) + len(data), _DELIVER_TYPE, seq, attempt, len(service))
    return b"".join((head, service, data))


def parse_deliver(payload: bytes) -> tuple[int, int, str, bytes]:
    if len(payload) < _DELIVER.size:
        raise ProtocolError("DELIVER frame too short")
    seq, attempt, name_len = _DELIVER.unpack_from(payload)
    start = _DELIVER.size + name_len
    if len(payload) < start:
        raise ProtocolError("DELIVER frame too short for its service name")
    try:
        service = payload[_DELIVER.size : start].decode()
    except UnicodeDecodeError:
        raise ProtocolError("DELIVER service name is not UTF-8") from None
    return seq, attempt, service, payload[start:]


_ACK_ONE = struct.Struct(">IBQ")


def ack_frame(seqs: list[int]) -> bytes:
    """A whole ACK frame of ``seqs`` (one struct pack for the common ACK of one)."""
    if len(seqs) == 1:
        return _ACK_ONE.pack(1 + _SEQ.size, Frame.ACK, seqs[0])
    return frame(Frame.ACK, seqs_payload(seqs))


def seqs_payload(seqs: list[int]) -> bytes:
    return _SEQ.pack(seqs[0]) if len(seqs) == 1 else struct.pack(f">{len(seqs)}Q", *seqs)


def parse_seqs(payload: bytes) -> list[int]:
    size = len(payload)
    if size % _SEQ.size:
        raise ProtocolError("ACK frame length is not a multiple of 8")
    return list(struct.unpack(f">{size // _SEQ.size}Q", payload))


def releases_payload(items: list[tuple[int, int]]) -> bytes:
    return b"".join(_SEQ_ATTEMPT.pack(seq, attempt) for seq, attempt in items)


def parse_releases(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % _SEQ_ATTEMPT.size:
        raise ProtocolError("RELEASE frame length is not a multiple of 12")
    return list(_SEQ_ATTEMPT.iter_unpack(payload))


def handoff_payload(token: int, attempt: int, service: str, key: str | None, data: bytes) -> bytes:
    name = service.encode()
    raw_key = b"" if key is None else key.encode()[: _NO_KEY - 1]
    return _HANDOFF.pack(token, attempt, len(name), _NO_KEY if key is None else len(raw_key)) + name + raw_key + data


def parse_handoff(payload: bytes) -> tuple[int, int, str, str | None, bytes]:
    if len(payload) < _HANDOFF.size:
        raise ProtocolError("HANDOFF frame too short")
    token, attempt, name_len, key_len = _HANDOFF.unpack_from(payload)
    start = _HANDOFF.size + name_len
    stop = start + (0 if key_len == _NO_KEY else key_len)
    if len(payload) < stop:
        raise ProtocolError("HANDOFF frame too short for its service name and key")
    try:
        service = payload[_HANDOFF.size : start].decode()
        key = None if key_len == _NO_KEY else payload[start:stop].decode()
    except UnicodeDecodeError:
        raise ProtocolError("HANDOFF service name or key is not UTF-8") from None
    return token, attempt, service, key, payload[stop:]


def dead_handoff_payload(token: int, letter: bytes) -> bytes:
    return _SEQ.pack(token) + letter


def parse_dead_handoff(payload: bytes) -> tuple[int, bytes]:
    if len(payload) < _SEQ.size:
        raise ProtocolError("DEAD_HANDOFF frame too short")
    (token,) = _SEQ.unpack_from(payload)
    return token, payload[_SEQ.size :]
