"""Dead letters: one stream per namespace (limits retention), a subject per service;
each message is the `DeadLetter` as JSON (original envelope included, base64).
Read with direct gets by subject, removed by sequence."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from nats.js.errors import NotFoundError

from pycomms.spi import DeadLetter

from ._connection import Link
from ._names import Names
from ._publisher import Outgoing, Publisher


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
        """Publish each chosen letter's envelope to the service's own subject, then delete it."""
        wanted = None if ids is None else set(ids)
        chosen = [(seq, letter) async for seq, letter in self._scan(service) if wanted is None or letter.id in wanted]
        for seq, letter in chosen:
            replay_id = f"replay-{self._names.dead_letter_stream}-{seq}"
            await self._publisher.publish([Outgoing(self._names.service(service), letter.envelope, replay_id)])
            await self._link.js.delete_msg(self._names.dead_letter_stream, seq)
        return len(chosen)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else set(ids)
        chosen = [seq async for seq, letter in self._scan(service) if wanted is None or letter.id in wanted]
        for seq in chosen:
            await self._link.js.delete_msg(self._names.dead_letter_stream, seq)
        return len(chosen)
