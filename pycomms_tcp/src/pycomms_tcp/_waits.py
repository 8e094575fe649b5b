"""Answers a node waits for from its peers (SUBSCRIBED, RPC_RESULT, HANDED), each
under a token it sent, bound to the link it went out on: an answer on another link,
or after the wait was given up, is ignored; a lost link fails its waits at once."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._connection import Connection


class Waits:
    """Tokens and the futures waiting on them."""

    def __init__(self) -> None:
        self._waits: dict[int, tuple[Connection, asyncio.Future[Any]]] = {}
        self._ids = itertools.count(1)

    def token(self) -> int:
        """A fresh token (also for frames whose answer is matched elsewhere)."""
        return next(self._ids)

    def expect(self, conn: Connection, token: int | None = None) -> tuple[int, asyncio.Future[Any]]:
        """Wait for an answer on ``conn``: ``(token, future)``; pass the future to `forget`
        when done with it."""
        if token is None:
            token = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waits[token] = (conn, future)
        return token, future

    def resolve(self, conn: Connection, token: Any, value: Any) -> None:
        """An answer arrived on ``conn``."""
        if not isinstance(token, int):
            return
        entry = self._waits.get(token)
        if entry is not None and entry[0] is conn:
            del self._waits[token]
            if not entry[1].done():
                entry[1].set_result(value)

    def forget(self, futures: dict[asyncio.Future[Any], int]) -> None:
        """Stop waiting (answered, timed out or cancelled); consume each outcome."""
        for future, token in futures.items():
            self._waits.pop(token, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()

    def link_lost(self, conn: Connection) -> None:
        """Fail every wait on ``conn`` with `ConnectionError`."""
        for token, (wait_conn, future) in list(self._waits.items()):
            if wait_conn is conn:
                del self._waits[token]
                if not future.done():
                    future.set_exception(ConnectionError("link lost"))
                    future.exception()

    def cancel_all(self) -> None:
        for _, future in self._waits.values():
            if not future.done():
                future.cancel()
        self._waits.clear()
