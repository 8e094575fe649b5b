"""Every receipt is checked against the envelope: a field of the wrong type or a kind
that does not fit the handler's type is dead-lettered ``malformed`` with a reason that
names the field and the value (docs/wire-format.md, "Checks on receipt")."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_core import to_json

import pycomms
from pycomms import Event, Message, Request, Service
from pycomms._memory import _Item
from pycomms.spi import DeadLetter, new_id
from pycomms.testing import eventually, run_strict


class Reading(Event):
    n: int


class Answer(Message):
    n: int


class Question(Request[Answer]):
    n: int


def _raw(**fields: Any) -> bytes:
    envelope = {
        "v": 1,
        "id": new_id(),
        "type": "Reading",
        "kind": "event",
        "source": "foreign-1",
        "time": 1721400000.25,
        "content_type": "application/json",
        "body": {"n": 1},
    }
    envelope.update(fields)
    return to_json({k: v for k, v in envelope.items() if v is not ...})


CASES = [
    pytest.param(_raw(kind="bogus"), "'kind'", "'bogus'", id="unknown-kind"),
    pytest.param(_raw(kind="command"), "'kind' is 'command'", "expected kind 'event'", id="command-on-event-type"),
    pytest.param(_raw(kind="reply"), "'kind' is 'reply'", "expected kind 'event'", id="reply-to-a-service"),
    pytest.param(
        _raw(type="Question", kind="event", reply_to="node-x"), "'kind' is 'event'", "request", id="request-as-event"
    ),
    pytest.param(_raw(type="Question", kind="request"), "'reply_to'", "None", id="request-without-reply-to"),
    pytest.param(_raw(content_type="text/plain"), "'content_type'", "'text/plain'", id="content-type"),
    pytest.param(_raw(time="1721400000.25"), "'time'", "'1721400000.25'", id="time-as-string"),
    pytest.param(_raw(time="2024-07-19T14:40:00Z"), "'time'", "'2024-07-19T14:40:00Z'", id="time-rfc3339"),
    pytest.param(_raw(time=True), "'time'", "True", id="time-as-bool"),
    pytest.param(_raw(source=7), "'source'", "7", id="source-as-number"),
    pytest.param(_raw(headers={"a": 1}), "'headers'", "strings", id="header-value-not-a-string"),
]


@pytest.mark.parametrize(("data", "field", "value"), CASES)
def test_a_receipt_that_does_not_fit_is_dead_lettered_naming_field_and_value(
    data: bytes, field: str, value: str
) -> None:
    handled: list[Any] = []

    async def scenario() -> list[DeadLetter]:
        svc = Service("checked")
        svc.on(Reading)(handled.append)
        svc.on(Question)(lambda q: handled.append(q) or Answer(n=q.n))
        async with pycomms.connect(f"memory://receipts?namespace=r{new_id()[-12:]}", services=[svc]) as bus:
            bus._transport._broker.queue("checked").put(_Item(data, 1))  # type: ignore[attr-defined]
            letters: list[DeadLetter] = []

            async def lettered() -> bool:
                letters[:] = await bus.dead_letters("checked")
                return bool(letters)

            await eventually(lettered, 5, "the dead letter")
            return letters

    [letter] = run_strict(scenario, 10)
    assert letter.reason == "malformed"
    assert field in letter.error, letter.error
    assert value in letter.error, letter.error
    assert letter.envelope == data
    assert handled == []


def test_well_formed_variants_are_accepted() -> None:
    """What the checks must not refuse: an integer time, a null time, a charset parameter."""

    async def scenario() -> list[int]:
        got: list[int] = []
        svc = Service("lenient")
        svc.on(Reading)(lambda m: got.append(m.n))
        async with pycomms.connect(f"memory://receipts?namespace=r{new_id()[-12:]}", services=[svc]) as bus:
            queue = bus._transport._broker.queue("lenient")  # type: ignore[attr-defined]
            queue.put(_Item(_raw(time=1721400000, body={"n": 1}), 1))
            queue.put(_Item(_raw(time=None, body={"n": 2}), 1))
            queue.put(_Item(_raw(content_type="application/json; charset=utf-8", body={"n": 3}), 1))
            queue.put(_Item(_raw(content_type=..., headers=None, body={"n": 4}), 1))

            async def all_in() -> bool:
                return len(got) == 4

            await eventually(all_in, 5, "four handled readings")
            assert await bus.dead_letters("lenient") == []
        return got

    assert sorted(run_strict(scenario, 10)) == [1, 2, 3, 4]
