"""ASGI types, and what the hub and the adapters share about ASGI servers.

``Send`` returns ``Awaitable[object]``: the hub looks at what ``send`` returns
(Granian's eager send hands back an already-finished awaitable), so it is typed
as "something to await", not a coroutine.

Eager sends. Under Granian ``send`` hands the bytes over at call time and
returns an already-finished awaitable (a ``PyEmptyAwaitable``) while the
connection's channel has room. ``SendStyle`` learns that type from the first
response start a stream sends (``SendStyle.observe``); from then on a result of
that type means "written" and needs no await, which is what lets one loop write
to thousands of streams without a task each. Under any other server (uvicorn,
hypercorn: ``send`` is a plain coroutine) no result is ever "written": every
write is awaited. This module imports nothing of the package, so that an
adapter (``sse_fast.starlette``) uses it without loading the hub.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._granian import EAGER_SEND_TYPE

#: an ASGI connection scope
Scope = MutableMapping[str, Any]
#: an ASGI event, received or sent
Message = MutableMapping[str, Any]
#: an ASGI ``receive`` callable
Receive = Callable[[], Awaitable[Message]]
#: an ASGI ``send`` callable (its result awaited unless ``SendStyle.written``)
Send = Callable[[Message], Awaitable[Any]]
#: ASGI headers: (name, value) pairs of bytes, names in lower case
Headers = list[tuple[bytes, bytes]]

__all__ = ["Headers", "Message", "Receive", "Scope", "Send", "SendStyle"]


class _NoEagerSendSeen:
    """The "written" type before an eager send was seen: no result has this type,
    so every result is awaited."""


class SendStyle:
    """Tells a finished write from one to await."""

    __slots__ = ("written_type",)

    def __init__(self) -> None:
        #: results of exactly this type are writes already done
        self.written_type: type = _NoEagerSendSeen

    @property
    def eager(self) -> bool:
        """Whether an eager ``send`` (Granian's) was seen."""
        return self.written_type is not _NoEagerSendSeen

    def observe(self, start_result: object) -> None:
        """Learn Granian's eager ``send`` from the result of a response start."""
        if not self.eager and type(start_result).__name__ == EAGER_SEND_TYPE:
            self.written_type = type(start_result)

    def written(self, result: object) -> bool:
        """True when a ``send`` result needs no await (the write is done)."""
        return type(result) is self.written_type
