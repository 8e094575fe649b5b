"""Dead letters across the cluster: each node keeps the letters of its own instances;
listing, replaying and purging from any node asks every connected node (an RPC frame)
and merges the answers. A listing is complete or fails: a node that does not answer
in ``operation_timeout`` seconds fails the call (`OperationError`), and a letter too
large for one answer page is listed cut, with a marker, never left out.

A node that closes hands its letters to a peer before it says BYE and answers no call
once it has begun closing. A call that meets such a departure asks again, the closed
node gone and its letters with their new holder; a listing that saw a letter on both
sides of the hand-over shows it once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pycomms import OperationError, PyCommsError
from pycomms.spi import DeadLetter

from ._errors import map_operation_errors
from ._frames import Frame, json_frame

if TYPE_CHECKING:
    from ._connection import Connection
    from ._membership import Peer, Peers
    from ._outbox import Outbox
    from ._spool import Spool
    from ._waits import Waits

log = logging.getLogger("pycomms.tcp")
T = TypeVar("T")

RPC_PAGE = 1000
"""Most dead letters one RPC answer carries (and at most half a frame of them)."""
ERROR_KEPT = 2000
"""Characters of ``error`` a cut letter keeps."""
CUT_MARK = "[listing cut:"
"""Start of the note appended to the ``error`` of a letter listed without body and envelope."""
ROUNDS = 5
"""Most times a call asks every node: it asks again after a node left while answering."""


class _Left(OperationError):
    """A peer said BYE before it answered: its letters are with another node now."""


def cut_letter(letter: DeadLetter, size: int, node_id: str) -> DeadLetter:
    """``letter`` without body and envelope, its error noting why: a letter of ``size``
    bytes that does not fit one answer page is listed this way."""
    note = (
        f" {CUT_MARK} the letter is {size} bytes, more than one page holds; body and envelope "
        f"are left out: list it on node {node_id} to see them, replay and purge work from any node]"
    )
    return DeadLetter(
        id=letter.id,
        type=letter.type,
        service=letter.service,
        reason=letter.reason,
        error=letter.error[:ERROR_KEPT] + note,
        attempts=letter.attempts,
        failed_at=letter.failed_at,
        body=None,
        source=letter.source,
        envelope=b"",
    )


class DeadLetters:
    """One node's side of the dead-letter calls: asking its peers, answering them."""

    def __init__(
        self,
        node_id: Callable[[], str],
        peers: Peers,
        waits: Waits,
        spool: Spool,
        outbox: Outbox,
        max_frame: int,
        timeout: float,
    ) -> None:
        self._node_id = node_id
        self._peers = peers
        self._waits = waits
        self._spool = spool
        self._outbox = outbox
        self._max_frame = max_frame
        self.timeout = timeout
        self.leaving = False
        """This node has begun closing: it answers no call (its letters are being handed over)."""

    # asking -----------------------------------------------------------------------

    async def listing(self, service: str, limit: int) -> list[DeadLetter]:
        for _ in range(ROUNDS):
            with map_operation_errors("reading dead letters"):
                letters = self._spool.dead(service, limit)
            pages, left = await self._on_every_peer(
                lambda p: self._letters_of(p, service, limit), "listing dead letters"
            )
            if not left:
                break
        else:
            raise _departures("listing dead letters")
        seen = {letter.id for letter in letters}
        for page in pages:
            for letter in page:
                if letter.id not in seen:  # a letter met before and after a hand-over
                    seen.add(letter.id)
                    letters.append(letter)
        letters.sort(key=lambda letter: (letter.failed_at, letter.id))
        return letters[:limit]

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else list(ids)
        body = {"op": "replay", "service": service, "ids": wanted}
        count = 0
        for _ in range(ROUNDS):
            with map_operation_errors("replaying dead letters"):
                count += self._replay_here(service, wanted)
            answers, left = await self._on_every_peer(lambda p: self._rpc(p, body), "replaying dead letters")
            count += sum(int(a or 0) for a in answers)
            if not left:
                await self._outbox.drain_links()
                return count
        raise _departures("replaying dead letters")

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else list(ids)
        body = {"op": "purge", "service": service, "ids": wanted}
        count = 0
        for _ in range(ROUNDS):
            with map_operation_errors("purging dead letters"):
                count += len(self._spool.take_dead(service, wanted))
            answers, left = await self._on_every_peer(lambda p: self._rpc(p, body), "purging dead letters")
            count += sum(int(a or 0) for a in answers)
            if not left:
                return count
        raise _departures("purging dead letters")

    async def _letters_of(self, peer: Peer, service: str, limit: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        offset = 0
        while len(letters) < limit:
            page = await self._rpc(peer, {"op": "dead_letters", "service": service, "limit": limit, "offset": offset})
            if not isinstance(page, list) or not page:
                break
            if "" in page:  # a node before this version left out letters too large to list
                raise OperationError(
                    f"tcp: node {peer.id} at {_where(peer)} left dead letters of {service} out of its listing "
                    "(they are too large for one page and it is an older version); list them on that node"
                )
            offset += len(page)
            try:
                letters += [DeadLetter.from_json(item) for item in page]
            except (ValueError, KeyError, TypeError) as exc:
                where = f"node {peer.id} at {_where(peer)}"
                raise OperationError(f"tcp: {where} sent a malformed dead letter: {exc!r}") from None
        return letters

    async def _rpc(self, peer: Peer, body: dict[str, Any]) -> Any:
        """Ask one peer; its ``result``. Raises `OperationError` if it fails, has no
        link or does not answer within the deadline."""
        op = body.get("op")
        conn = peer.link
        if conn is None:
            raise OperationError(f"tcp: node {peer.id} at {_where(peer)} has no open link for {op}")
        token, future = self._waits.expect(conn)
        conn.send(json_frame(Frame.RPC, {**body, "id": token}))
        try:
            async with asyncio.timeout(self.timeout):
                answer = await future
        except TimeoutError:
            raise OperationError(
                f"tcp: node {peer.id} at {_where(peer)} did not answer {op} within {self.timeout}s (operation_timeout)"
            ) from None
        except ConnectionError:
            if peer.said_bye:
                raise _Left(f"tcp: node {peer.id} left while answering {op}") from None
            raise OperationError(f"tcp: node {peer.id} at {_where(peer)} lost its link while answering {op}") from None
        finally:
            self._waits.forget({future: token})
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise OperationError(f"tcp: node {peer.id} at {_where(peer)} failed {op}: {error}")
        return answer.get("result")

    async def _on_every_peer(self, ask: Callable[[Peer], Awaitable[T]], what: str) -> tuple[list[T], bool]:
        """``ask`` every peer at once; the answers, and whether a peer left (said BYE)
        instead of answering. `OperationError` names the nodes that failed otherwise
        (a partial answer must not look complete)."""
        peers = self._peers.linked()
        results = await asyncio.gather(*(ask(peer) for peer in peers), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException) and not isinstance(r, _Left)]
        for result in failed:
            if not isinstance(result, PyCommsError):
                raise result
        if failed:
            raise OperationError(f"{what}: {len(failed)} node(s) did not answer: " + "; ".join(map(str, failed)))
        answers = [r for r in results if not isinstance(r, BaseException)]
        return answers, len(answers) < len(results)

    # answering --------------------------------------------------------------------

    def answer(self, conn: Connection, body: dict[str, Any]) -> None:
        """Answer an RPC frame from a peer (not once closing: the asker learns from
        the BYE that follows the hand-over, and asks the holders of the letters)."""
        if self.leaving:
            return
        op, service, token = str(body.get("op")), body.get("service"), body.get("id")
        ids = body.get("ids")
        try:
            if not isinstance(service, str) or (ids is not None and not isinstance(ids, list)):
                raise ValueError("bad arguments")
            if op == "dead_letters":
                result: Any = self.page(service, int(body.get("limit", 100)), int(body.get("offset", 0)))
            elif op == "replay":
                result = self._replay_here(service, ids)
            elif op == "purge":
                result = len(self._spool.take_dead(service, ids))
            else:
                raise ValueError(f"unknown operation {op!r}")
            answer = {"id": token, "ok": True, "result": result}
        except Exception as exc:
            answer = {"id": token, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        conn.send(json_frame(Frame.RPC_RESULT, answer))

    def _replay_here(self, service: str, ids: list[str] | None) -> int:
        """Send this node's dead letters of ``service`` (all, or ``ids``) again."""
        letters = self._spool.take_dead(service, ids)
        for letter in letters:
            if not self._outbox.dispatch(service, letter.envelope, 1, None, None):
                self._outbox.keep(service, letter.envelope, 1, None)
        return len(letters)

    def page(self, service: str, limit: int, offset: int) -> list[str]:
        """Dead letters from ``offset`` on, as many as fit in half a frame (the asker
        pages on until it gets an empty page); a letter too large for that is listed
        cut (see `cut_letter`), so that every letter is in the listing."""
        budget, size, page = self._max_frame // 2, 0, list[str]()
        for letter in self._spool.dead(service, max(0, min(limit, RPC_PAGE)), max(0, offset)):
            raw = letter.to_json().decode()
            if len(raw) > budget:
                raw = cut_letter(letter, len(raw), self._node_id()).to_json().decode()
            if page and size + len(raw) > budget:
                break
            page.append(raw)
            size += len(raw)
        return page


def _departures(what: str) -> OperationError:
    return OperationError(f"{what}: a node left during each of {ROUNDS} tries; try again")


def _where(peer: Peer) -> str:
    host, port = peer.addr
    return f"{host}:{port}"
