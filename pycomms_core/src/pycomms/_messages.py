"""Message base classes: the typed contracts applications exchange."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

Kind = Literal["message", "event", "command", "request", "reply"]


class Message(BaseModel):
    """A plain typed payload (a reply, or a part of another message).

    Its wire type name is the class ``__name__`` unless given with a class keyword,
    ``class Price(Message, name="shop.price")``, or a ``type_name`` ClassVar.
    """

    model_config = ConfigDict(extra="ignore")

    type_name: ClassVar[str] = "Message"
    kind: ClassVar[Kind] = "message"

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise TypeError(f"{cls.__qualname__}: message type name must be a non-empty str, got {name!r}")
            cls.type_name = name
        elif "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__


class Event(Message):
    """Fan-out: every service that handles it gets one copy."""

    kind: ClassVar[Kind] = "event"


class Command(Message):
    """Point-to-point: one instance of the service that handles it."""

    kind: ClassVar[Kind] = "command"


R = TypeVar("R", bound=Message)


class Request(Message, Generic[R]):
    """Request/reply: ``class GetPrice(Request[Price])`` is answered with a ``Price``."""

    kind: ClassVar[Kind] = "request"
    reply_type: ClassVar[type[Message]]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        meta = cls.__pydantic_generic_metadata__
        if meta["origin"] is Request and meta["args"]:
            reply = meta["args"][0]
            if not (isinstance(reply, type) and issubclass(reply, Message)):
                raise TypeError(f"Request[...] takes a Message subclass as its reply type, got {reply!r}")
            cls.reply_type = reply
            return
        if meta["origin"] is not None:
            return
        if "reply_type" not in cls.__dict__ and not hasattr(cls, "reply_type"):
            raise TypeError(
                f"{cls.__qualname__}: a request declares its reply type, e.g. class {cls.__name__}(Request[MyReply])"
            )


def is_message_type(obj: object) -> bool:
    """True for a concrete Message subclass that can travel on the bus."""
    return (
        isinstance(obj, type)
        and issubclass(obj, Message)
        and obj not in (Message, Event, Command, Request)
        and obj.__pydantic_generic_metadata__["origin"] is None
    )
