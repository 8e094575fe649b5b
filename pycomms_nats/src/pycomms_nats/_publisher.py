"""JetStream publishing: every message is a request answered by the stream's ack, many
in flight at once; re-sent with the same ``Nats-Msg-Id`` (deduplicated by the server)
when no ack came, the link failed or a cluster answered 503, until the ack comes or
``operation_timeout`` passes, so a reconnect or a leader change in a cluster costs
time, never a copy or a loss."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

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


@dataclass(frozen=True, slots=True)
class Outgoing:
    subject: str
    data: bytes
    msg_id: str | None
    """``Nats-Msg-Id``: the envelope id, so that a re-sent copy is dropped by the server."""


class Publisher:
    """Publishes to streams and waits for each message's stream acknowledgement."""

    def __init__(self, link: Link, timeout: float, inflight: int) -> None:
        self._link = link
        self._timeout = timeout
        self._inflight = inflight

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Return once the stream holds every message; raise `PublishError` otherwise."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        if len(messages) == 1:
            await self._one(messages[0], deadline)
            return
        for start in range(0, len(messages), self._inflight):
            chunk = messages[start : start + self._inflight]
            results = await asyncio.gather(*(self._one(m, deadline) for m in chunk), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _one(self, message: Outgoing, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        client = self._link.client
        headers = {"Content-Type": CONTENT_TYPE}
        if message.msg_id is not None:
            headers["Nats-Msg-Id"] = message.msg_id
        pause = 0.05
        wait = max(RESEND_AFTER, self._timeout / 4)
        last: str = "no acknowledgement"
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PublishError(
                    f"nats: publish to {message.subject} on {self._link.server} timed out after "
                    f"{self._timeout:g}s ({last})"
                )
            try:
                reply = await client.request(
                    message.subject, message.data, timeout=min(remaining, wait), headers=headers
                )
            except NatsTimeout as exc:
                last = describe_error(exc)
                wait *= 2
                continue
            except (NatsError, OSError) as exc:
                last = describe_error(exc)
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
                pause = min(pause * 2, 0.5)
                continue
            if b'"error"' not in reply.data[:16]:
                return
            error = _error_of(reply.data)
            if error.get("code") == 503:  # JetStream briefly unavailable (a leader election): try again
                last = str(error.get("description", "unavailable"))
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
                pause = min(pause * 2, 0.5)
                continue
            raise PublishError(
                f"nats: publish to {message.subject} on {self._link.server} refused: "
                f"{error.get('description', 'error')} (code {error.get('code')}, err_code {error.get('err_code')})"
            )


def _error_of(data: bytes) -> dict[str, object]:
    try:
        parsed = json.loads(data[:4096])
        error = parsed.get("error") if isinstance(parsed, dict) else None
    except ValueError:
        error = None
    return error if isinstance(error, dict) else {"description": data[:200].decode(errors="replace")}
