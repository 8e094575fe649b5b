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
    """A CloudEvent as a foreign program writes it, with ``fields`` changed (``...`` removes one)."""
    event = {
        "specversion": "1.0",
        "id": new_id(),
        "source": "foreign-1",
        "type": "Reading",
        "kind": "event",
        "time": "2024-07-19T14:40:00.250Z",
        "datacontenttype": "application/json",
        "data": {"n": 1},
    }
    event.update(fields)
    return to_json({k: v for k, v in event.items() if v is not ...})


def _wire1(**fields: Any) -> bytes:
    """A PyComms wire-1 envelope (still read), with ``fields`` changed."""
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
    pytest.param(_raw(kind=...), "'kind'", "None", id="no-kind"),
    pytest.param(_raw(kind="command"), "'kind' is 'command'", "expected kind 'event'", id="command-on-event-type"),
    pytest.param(_raw(kind="reply"), "'kind' is 'reply'", "expected kind 'event'", id="reply-to-a-service"),
    pytest.param(
        _raw(type="Question", kind="event", replyto="node-x"), "'kind' is 'event'", "request", id="request-as-event"
    ),
    pytest.param(_raw(type="Question", kind="request"), "'replyto'", "None", id="request-without-replyto"),
    pytest.param(_raw(datacontenttype="text/plain"), "'datacontenttype'", "'text/plain'", id="content-type"),
    pytest.param(_raw(time=1721400000.25), "'time'", "1721400000.25", id="time-as-number"),
    pytest.param(_raw(time="2024-07-19 14:40"), "'time'", "'2024-07-19 14:40'", id="time-not-rfc3339"),
    pytest.param(_raw(time=True), "'time'", "True", id="time-as-bool"),
    pytest.param(_raw(source=7), "'source'", "7", id="source-as-number"),
    pytest.param(_raw(specversion="0.3"), "specversion '0.3'", "CloudEvents 1.0", id="other-specversion"),
    pytest.param(_raw(ext={"a": 1}), "'ext'", "{'a': 1}", id="extension-not-a-string"),
    pytest.param(_wire1(headers={"a": 1}), "'headers'", "strings", id="wire1-header-value-not-a-string"),
    pytest.param(_wire1(time="2024-07-19T14:40:00Z"), "'time'", "'2024-07-19T14:40:00Z'", id="wire1-time-as-string"),
    pytest.param(_wire1(v=3), "wire 3", "PyComms wire 2", id="unknown-wire-version"),
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
    """What the checks must not refuse: another RFC 3339 form, no time, a charset parameter, no
    datacontenttype, a wire-1 envelope, extensions."""

    async def scenario() -> list[int]:
        got: list[int] = []
        svc = Service("lenient")
        svc.on(Reading)(lambda m: got.append(m.n))
        async with pycomms.connect(f"memory://receipts?namespace=r{new_id()[-12:]}", services=[svc]) as bus:
            queue = bus._transport._broker.queue("lenient")  # type: ignore[attr-defined]
            queue.put(_Item(_raw(time="2024-07-19T16:40:00+02:00", data={"n": 1}), 1))
            queue.put(_Item(_raw(time=..., data={"n": 2}), 1))
            queue.put(_Item(_raw(datacontenttype="application/json; charset=utf-8", data={"n": 3}), 1))
            queue.put(_Item(_raw(datacontenttype=..., traceparent="00-a-b-01", retries=2, data={"n": 4}), 1))
            queue.put(_Item(_wire1(time=1721400000, body={"n": 5}), 1))

            async def all_in() -> bool:
                return len(got) == 5

            await eventually(all_in, 5, "five handled readings")
            assert await bus.dead_letters("lenient") == []
        return got

    assert sorted(run_strict(scenario, 10)) == [1, 2, 3, 4, 5]
