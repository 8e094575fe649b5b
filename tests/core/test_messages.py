from __future__ import annotations

import pytest

from pycomms import Command, Event, Message, Request
from pycomms._messages import is_message_type


class Price(Message):
    cents: int


class GetPrice(Request[Price]):
    sku: str


class Named(Event, name="shop.named"):
    x: int


class ByClassVar(Command):
    type_name = "shop.by_classvar"


def test_type_name_defaults_to_class_name() -> None:
    assert Price.type_name == "Price"
    assert GetPrice.type_name == "GetPrice"


def test_type_name_from_class_keyword_and_classvar() -> None:
    assert Named.type_name == "shop.named"
    assert ByClassVar.type_name == "shop.by_classvar"


def test_subclass_gets_its_own_name() -> None:
    class Child(Named):
        pass

    assert Child.type_name == "Child"


def test_kinds() -> None:
    assert (Named.kind, ByClassVar.kind, GetPrice.kind, Price.kind) == ("event", "command", "request", "message")


def test_request_reply_type() -> None:
    assert GetPrice.reply_type is Price


def test_request_without_reply_type_is_an_error() -> None:
    with pytest.raises(TypeError, match="declares its reply type"):

        class Bad(Request):  # type: ignore[type-arg]
            pass


def test_request_reply_type_must_be_a_message() -> None:
    with pytest.raises(TypeError, match="Message subclass"):
        Request[int]  # type: ignore[type-var]


def test_empty_name_is_an_error() -> None:
    with pytest.raises(TypeError, match="non-empty"):

        class Bad(Event, name=""):
            pass


def test_is_message_type() -> None:
    assert is_message_type(GetPrice)
    assert not is_message_type(Request[Price])
    assert not is_message_type(Event)
    assert not is_message_type(int)
