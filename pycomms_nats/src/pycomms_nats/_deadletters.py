"""Dead letters: one stream per namespace (limits retention), a subject per service;
each message is the `DeadLetter` as JSON (original envelope included, base64).
Read with direct gets by subject, removed by sequence."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence

from nats.js.errors import NotFoundError

from pycomms.spi import DeadLetter

from ._connection import Link
from ._names import Names
from ._publisher import Outgoing, Publisher

CHUNK = 500
"""Letters replayed (published, then deleted) or deleted together."""


class DeadLetters:
    def __init__(self, link: Link, names: Names, publisher: Publisher) -> None:
        self._link = link
        self._names = names
        self._publisher = publisher

    async def store(self, service: str, letter: DeadLetter, msg_id: str) -> None:
        await self._publisher.publish([Outgoing(self._names.dead_letters(service), bytes(letter.to_json()), msg_id)])

    async def _scan(self, service: str) -> AsyncIterator[tuple[int, DeadLetter]]:
        """Every letter of ``service``, oldest first, with its stream sequence."""
        js, stream, subject = self._link.js, self._names.dead_letter_stream, self._names.dead_letters(service)
        seq = 1
        while True:
            try:
                raw = await js.get_msg(stream, seq, subject=subject, next=True)
            except NotFoundError:
                return
            yield int(raw.seq), DeadLetter.from_json(raw.data or b"{}")
            seq = int(raw.seq) + 1

    async def list(self, service: str, limit: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        async for _, letter in self._scan(service):
            if len(letters) >= limit:
                break
            letters.append(letter)
        return letters

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        """Publish each chosen letter's envelope to the service's own subject, then delete
        it: `CHUNK` letters at a time, each chunk deleted only once all of it is stored in
        the work stream (a crash in between replays a chunk twice, never loses one)."""
        wanted = None if ids is None else set(ids)
        chosen = await self._choose(service, wanted)
        stream, target = self._names.dead_letter_stream, self._names.service(service)
        for start in range(0, len(chosen), CHUNK):
            chunk = chosen[start : start + CHUNK]
            await self._publisher.publish(
                [Outgoing(target, letter.envelope, f"replay-{stream}-{seq}") for seq, letter in chunk]
            )
            await self._remove(service, [seq for seq, _ in chunk], everything=wanted is None)
        return len(chosen)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else set(ids)
        chosen = [seq for seq, _ in await self._choose(service, wanted)]
        for start in range(0, len(chosen), CHUNK):
            await self._remove(service, chosen[start : start + CHUNK], everything=wanted is None)
        return len(chosen)

    async def _choose(self, service: str, wanted: set[str] | None) -> builtins.list[tuple[int, DeadLetter]]:
        """The letters of ``service`` whose ids are ``wanted`` (all if None), oldest first.
        The scan stops once every wanted id is found: a caller going through the letters
        a page at a time, oldest first (``pycomms dlq replay``), reads each page only."""
        chosen: builtins.list[tuple[int, DeadLetter]] = []
        missing = None if wanted is None else set(wanted)
        async for seq, letter in self._scan(service):
            if missing is None:
                chosen.append((seq, letter))
            elif letter.id in missing:
                chosen.append((seq, letter))
                missing.discard(letter.id)
                if not missing:
                    break
        return chosen

    async def _remove(self, service: str, seqs: Sequence[int], *, everything: bool) -> None:
        """Delete the letters ``seqs`` (ascending) of ``service``. With ``everything`` (every
        letter up to the last of them was chosen) one purge of the service's subject up
        to it does; otherwise each is deleted, `CHUNK` requests in flight."""
        if not seqs:
            return
        js, stream = self._link.js, self._names.dead_letter_stream
        if everything:
            await js.purge_stream(stream, seq=seqs[-1] + 1, subject=self._names.dead_letters(service))
            return
        await asyncio.gather(*(js.delete_msg(stream, seq) for seq in seqs))
