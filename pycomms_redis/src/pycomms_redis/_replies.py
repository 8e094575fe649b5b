"""Replies: each node reads its own reply stream (plain XREAD, no group) and trims
what it has read."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis import exceptions as rex
from redis.asyncio import Redis

from pycomms.spi import ReplySink

from ._errors import describe

log = logging.getLogger("pycomms.redis")
_TRIM_EVERY = 5.0


class ReplyReader:
    """Passes each reply addressed to this node to the bus."""

    def __init__(self, client: Redis, stream: str, sink: ReplySink, block: float) -> None:
        self._client = client
        self._stream = stream
        self._sink = sink
        self._block_ms = round(block * 1000)

    async def run(self) -> None:
        last: bytes = b"0-0"
        trimmed = last
        loop = asyncio.get_running_loop()
        next_trim = loop.time() + _TRIM_EVERY
        failures = 0
        while True:
            try:
                response: Any = await self._client.xread({self._stream: last}, count=1000, block=self._block_ms)
                if last != trimmed and loop.time() >= next_trim:
                    await self._client.xtrim(self._stream, minid=last, approximate=False)
                    trimmed, next_trim = last, loop.time() + _TRIM_EVERY
            except (rex.RedisError, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("reading replies from %s failed: %s; reconnecting", self._stream, describe(exc))
                await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                continue
            if failures:
                log.info("reading replies from %s works again", self._stream)
                failures = 0
            for _stream, entries in response or ():
                for entry_id, fields in entries:
                    last = entry_id
                    data = fields.get(b"d")
                    if data is not None:
                        self._sink(data)
