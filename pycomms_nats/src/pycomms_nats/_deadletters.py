"""Dead letters: one stream per namespace (limits retention), a subject per service;
each message is the `DeadLetter` as JSON (original envelope included, base64).
Read through an ordered consumer on the service's subject, removed by sequence, or by
a purge of the subject up to a sequence when every letter up to it goes.

Every step (one get, one chunk written, one purge) has its own ``operation_timeout``,
not the whole call: listing or replaying tens of thousands of letters takes longer
than one deadline, and each step still fails fast on a silent server."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
from collections.abc import AsyncIterator, Sequence

from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from pycomms.spi import DeadLetter

from ._connection import CLOSE_STEP, STEP_ERRORS, Link
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

    async def list(self, service: str, limit: int) -> builtins.list[DeadLetter]:
        letters: builtins.list[DeadLetter] = []
        async for _, letter in self._scan(f"dead_letters({service!r})", service):
            if len(letters) >= limit:
                break
            letters.append(letter)
        return letters

    async def replay(self, service: str, ids: Sequence[str] | None) -> int:
        """Publish each chosen letter's envelope to the service's own subject, then delete
        it: `CHUNK` letters at a time, each chunk deleted only once all of it is stored in
        the work stream (a crash in between replays a chunk twice, never loses one)."""
        what = f"replay({service!r})"
        chosen = await self._choose(what, service, ids)
        stream, target = self._names.dead_letter_stream, self._names.service(service)
        for start in range(0, len(chosen), CHUNK):
            chunk = chosen[start : start + CHUNK]
            batch = [Outgoing(target, letter.envelope, f"replay-{stream}-{seq}") for seq, letter in chunk]
            await self._link.call(what, functools.partial(self._publisher.publish, batch))
            await self._remove(what, service, [seq for seq, _ in chunk], everything=ids is None)
        return len(chosen)

    async def purge(self, service: str, ids: Sequence[str] | None) -> int:
        what = f"purge({service!r})"
        chosen = [seq for seq, _ in await self._choose(what, service, ids)]
        for start in range(0, len(chosen), CHUNK):
            await self._remove(what, service, chosen[start : start + CHUNK], everything=ids is None)
        return len(chosen)

    async def _choose(
        self, what: str, service: str, ids: Sequence[str] | None
    ) -> builtins.list[tuple[int, DeadLetter]]:
        """The letters of ``service`` whose ids are in ``ids`` (all if None), every copy
        of an id included, oldest first."""
        wanted = None if ids is None else set(ids)
        return [
            (seq, letter) async for seq, letter in self._scan(what, service) if wanted is None or letter.id in wanted
        ]

    async def _scan(self, what: str, service: str) -> AsyncIterator[tuple[int, DeadLetter]]:
        """Every letter of ``service`` up to the last one stored when the scan starts,
        oldest first, with its stream sequence: read through an ordered push consumer
        (ephemeral, flow-controlled), about 4 times faster than a message get per letter."""
        js, stream, subject = self._link.js, self._names.dead_letter_stream, self._names.dead_letters(service)

        async def last() -> int:
            try:
                return int((await js.get_last_msg(stream, subject)).seq)
            except NotFoundError:
                return 0

        end = await self._link.call(what, last)
        if not end:
            return
        sub = await self._link.call(
            what, lambda: js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        )
        try:
            messages = sub.messages
            while True:
                msg = await self._link.call(what, lambda: anext(messages))
                meta = msg.metadata
                yield int(meta.sequence.stream), DeadLetter.from_json(msg.data or b"{}")
                # the last one, or none left: letters removed meanwhile do not hold the scan
                if meta.sequence.stream >= end or not meta.num_pending:
                    return
        finally:
            with contextlib.suppress(*STEP_ERRORS):
                async with asyncio.timeout(CLOSE_STEP):
                    await sub.unsubscribe()

    async def _remove(self, what: str, service: str, seqs: Sequence[int], *, everything: bool) -> None:
        """Delete the letters ``seqs`` (ascending) of ``service``. With ``everything`` (every
        letter of the service up to the last of them was chosen) one purge of the
        service's subject up to it does (NATS purges below ``seq``, hence the + 1);
        otherwise each is deleted, all of them in flight at once."""
        if not seqs:
            return
        js, stream = self._link.js, self._names.dead_letter_stream
        if everything:
            subject = self._names.dead_letters(service)
            await self._link.call(what, lambda: js.purge_stream(stream, seq=seqs[-1] + 1, subject=subject))
            return
        await self._link.call(what, lambda: asyncio.gather(*(js.delete_msg(stream, seq) for seq in seqs)))
