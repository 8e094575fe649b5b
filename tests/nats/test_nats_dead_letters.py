"""Dead letters on ``nats://`` in bulk: two services' letters interleaved in the one
dead-letter stream, more than one chunk (`CHUNK`) of each; replaying or purging one
service's letters, all or by ids, takes exactly those and never the other's (its purge
is by subject, up to a sequence)."""

from __future__ import annotations

import pytest
from nats_support import drop_namespace, new_namespace, url_for
from pycomms_nats._deadletters import CHUNK

import pycomms
from pycomms import Event, Retry, Service
from pycomms.testing import Recorder, eventually, run_strict

pytestmark = [pytest.mark.timeout(180)]
LETTERS = CHUNK * 2 + 200  # per service: three chunks, the last one partial


class Parcel(Event, name="natsdlq.parcel"):
    n: int


class Invoice(Event, name="natsdlq.invoice"):
    n: int


def test_replay_and_purge_of_one_service_leave_the_other_s_letters() -> None:
    url = url_for(new_namespace())

    async def scenario() -> None:
        broken = [True]
        shipped = Recorder()
        shipping = Service("shipping", retry=Retry(max_attempts=1), concurrency=64)
        billing = Service("billing", retry=Retry(max_attempts=1), concurrency=64)

        @shipping.on
        async def ship(parcel: Parcel) -> None:
            if broken[0]:
                raise RuntimeError("the carrier is down")
            shipped.add(parcel.n)

        @billing.on
        async def bill(invoice: Invoice) -> None:
            raise RuntimeError("the ledger is locked")

        async with (
            pycomms.connect(url, services=[shipping, billing], name="worker"),
            pycomms.connect(url, name="admin") as admin,
        ):
            for start in range(0, LETTERS, 100):  # interleaved in the stream
                await admin.publish(*(Parcel(n=n) for n in range(start, min(LETTERS, start + 100))))
                await admin.publish(*(Invoice(n=n) for n in range(start, min(LETTERS, start + 100))))

            async def all_dead() -> bool:
                counts = [len(await admin.dead_letters(s, limit=2 * LETTERS)) for s in ("shipping", "billing")]
                return counts == [LETTERS, LETTERS]

            await eventually(all_dead, 60, f"{LETTERS} dead letters of each service")
            invoices = await admin.dead_letters("billing", limit=2 * LETTERS)

            broken[0] = False
            assert await admin.replay("shipping") == LETTERS  # all: purged by subject, chunk by chunk
            await shipped.wait(LETTERS, 60)
            assert sorted(shipped.items) == list(range(LETTERS))  # each once
            assert await admin.dead_letters("shipping", limit=10) == []
            assert await admin.dead_letters("billing", limit=2 * LETTERS) == invoices

            some = [letter.id for letter in invoices[CHUNK - 50 : 2 * CHUNK + 50]]  # across chunk edges
            assert await admin.purge("billing", ids=some) == len(some)
            left = await admin.dead_letters("billing", limit=2 * LETTERS)
            assert [letter.id for letter in left] == [letter.id for letter in invoices if letter.id not in some]
            assert await admin.purge("billing") == len(left)
            assert await admin.dead_letters("billing", limit=10) == []

    try:
        run_strict(scenario, 150)
    finally:
        drop_namespace(url)
