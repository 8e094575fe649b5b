"""JetStream publishing: every message is sent with a reply subject of this publisher's
own inbox, where the stream's acknowledgement arrives; a ``publish`` call waits for all
of its messages at once (one future and one timer per call, not per message). A message
is re-sent with the same ``Nats-Msg-Id`` (deduplicated by the server) when no ack came,
the link failed or a cluster answered 503, until the ack comes or ``operation_timeout``
passes, so a reconnect or a leader change in a cluster costs time, never a copy or a loss."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from pycomms import PublishError
from pycomms.spi import describe_error

from ._connection import Link

log = logging.getLogger("pycomms.nats")

CONTENT_TYPE = "application/cloudevents+json"
"""Structured-mode CloudEvents (the NATS protocol binding's ``Content-Type`` header)."""

RESEND_AFTER = 2.0
"""Seconds to wait for the first ack before sending the message again (at least a
quarter of ``operation_timeout``); the wait doubles with each re-send, so that a busy
server is not flooded with copies it will only deduplicate."""

_WAITING, _STORED, _AGAIN = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Outgoing:
    subject: str
    data: bytes
    msg_id: str | None
    """``Nats-Msg-Id``: the envelope id, so that a re-sent copy is dropped by the server."""


class _Call:
    """The messages of one ``publish`` call still awaiting their answer."""

    __slots__ = ("again", "answered", "left", "refused")

    def __init__(self, left: int, answered: asyncio.Future[None]) -> None:
        self.left = left
        """Messages not answered yet."""
        self.again = 0
        """Messages answered with "try again" (503, a failed send)."""
        self.answered = answered
        self.refused: str | None = None

    def answer(self, again: bool = False) -> None:
        self.again += again
        self.left -= 1
        if self.left <= 0 and not self.answered.done():
            self.answered.set_result(None)

    def refuse(self, reason: str) -> None:
        self.refused = reason
        if not self.answered.done():
            self.answered.set_result(None)


class _Entry:
    """One message of a call: its ack arrives on ``reply``."""

    __slots__ = ("call", "message", "reply", "state", "why")

    def __init__(self, message: Outgoing, reply: str, call: _Call) -> None:
        self.message = message
        self.reply = reply
        self.call = call
        self.state = _WAITING
        self.why = "no acknowledgement"


class Publisher:
    """Publishes to streams and waits for each message's stream acknowledgement."""

    def __init__(self, link: Link, timeout: float, inflight: int) -> None:
        self._link = link
        self._timeout = timeout
        self._inflight = inflight
        self._first_wait = max(RESEND_AFTER, timeout / 4)
        self._waiting: dict[str, _Entry] = {}
        self._prefix = ""
        self._tokens = itertools.count()
        self._sub: Any = None

    async def start(self) -> None:
        """Subscribe to the inbox where this publisher's acknowledgements arrive
        (nats-py subscribes again after a reconnect)."""
        inbox = self._link.client.new_inbox()
        self._prefix = inbox + "."
        self._sub = await self._link.client.subscribe(inbox + ".*", cb=self._on_answer)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Return once the stream holds every message; raise `PublishError` otherwise."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        inflight = self._inflight
        for start in range(0, len(messages), inflight):
            await self._confirm(messages[start : start + inflight], deadline)

    async def _confirm(self, messages: Sequence[Outgoing], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        call = _Call(len(messages), loop.create_future())
        prefix, tokens = self._prefix, self._tokens
        entries = [_Entry(m, f"{prefix}{next(tokens)}", call) for m in messages]
        try:
            await self._send(entries)
            wait, pause = self._first_wait, 0.05
            while True:
                if call.left > 0 and call.refused is None:
                    try:
                        async with asyncio.timeout_at(min(loop.time() + wait, deadline)):
                            await call.answered
                    except TimeoutError:
                        pass
                if call.refused is not None:
                    raise PublishError(
                        f"nats: publish to {entries[0].message.subject} on {self._link.server} refused: {call.refused}"
                    )
                if not call.left and not call.again:
                    return
                again = [e for e in entries if e.state != _STORED]
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise PublishError(
                        f"nats: publish to {again[0].message.subject} on {self._link.server} timed out after "
                        f"{self._timeout:g}s ({again[0].why})"
                    )
                if any(e.state == _WAITING for e in again):
                    wait *= 2  # no answer at all: a busy server, a lost link; do not flood it
                else:
                    await asyncio.sleep(min(pause, remaining))  # 503 or a failed send: soon again
                    pause = min(pause * 2, 0.5)
                again = [e for e in entries if e.state != _STORED]  # a late ack may have come meanwhile
                if not again:
                    return
                call.left, call.again = len(again), 0
                call.answered = loop.create_future()
                await self._send(again)
        finally:
            if call.left:
                waiting = self._waiting
                for entry in entries:
                    waiting.pop(entry.reply, None)

    async def _send(self, entries: list[_Entry]) -> None:
        """Send each entry (again) and await its answer on the inbox; a send that fails
        counts as answered with "try again" (the link is down or reconnecting). Each
        entry's answer is counted once per round: an entry stored while the round sends
        (a late ack of the previous round, which it was counted for) is not sent again,
        so its copy's ack cannot count for another entry's."""
        client, waiting = self._link.client, self._waiting
        for entry in entries:
            if entry.state == _STORED:
                continue  # the previous round's ack came while this round was sending: counted, not sent again
            message = entry.message
            headers = {"Content-Type": CONTENT_TYPE}
            if message.msg_id is not None:
                headers["Nats-Msg-Id"] = message.msg_id
            entry.state = _WAITING
            waiting[entry.reply] = entry
            try:
                await client.publish(message.subject, message.data, entry.reply, headers)
            except (NatsError, OSError) as exc:
                waiting.pop(entry.reply, None)
                entry.state, entry.why = _AGAIN, describe_error(exc)
                entry.call.answer(again=True)

    async def _on_answer(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject, None)
        if entry is None:
            return  # the answer to a copy, or to a call that gave up
        data = msg.data
        if data and b'"error"' not in data[:16]:
            entry.state = _STORED
            entry.call.answer()
            return
        if not data:
            status = (msg.headers or {}).get("Status")
            if status != "503":
                entry.call.refuse(f"status {status} without a body")
                return
            why = "no responders: no stream holds the subject (yet)"
        else:
            error = _error_of(data)
            if error.get("code") != 503:
                entry.call.refuse(
                    f"{error.get('description', 'error')} (code {error.get('code')}, err_code {error.get('err_code')})"
                )
                return
            why = str(error.get("description", "unavailable"))  # JetStream briefly unavailable: a leader election
        entry.state, entry.why = _AGAIN, why
        entry.call.answer(again=True)


def _error_of(data: bytes) -> dict[str, object]:
    try:
        parsed = json.loads(data[:4096])
        error = parsed.get("error") if isinstance(parsed, dict) else None
    except ValueError:
        error = None
    return error if isinstance(error, dict) else {"description": data[:200].decode(errors="replace")}
