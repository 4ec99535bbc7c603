"""The server adapter: what the hub needs to know about the ASGI server.

* Eager sends. Under Granian ``send`` hands the bytes over at call time and
  returns an already-finished awaitable (a ``PyEmptyAwaitable``) while the
  connection's channel has room. The hub learns that type from the first
  response start it sends (``SendStyle.observe``); from then on a result of that
  type means "written" and needs no await, which is what lets one loop write to
  thousands of streams without a task each. Under any other server (uvicorn,
  hypercorn: ``send`` is a plain coroutine) no result is ever "written": every
  write is awaited, by a stream's catch-up task.
* Disconnects. Granian's ``send`` never fails on a closed client, so each
  stream waits on ``receive()`` for ``http.disconnect``; ``DisconnectWatch``
  does it with a callback on each ``receive()`` rather than a task per stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..asgi import Message, Receive

if TYPE_CHECKING:
    from .subscription import Subscription

__all__ = [
    "DisconnectWatch",
    "SendStyle",
]


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
        return self.written_type is not _NoEagerSendSeen

    def observe(self, start_result: object) -> None:
        """Learn Granian's eager ``send`` from the result of a response start."""
        if not self.eager and type(start_result).__name__ == "PyEmptyAwaitable":
            self.written_type = type(start_result)

    def written(self, result: object) -> bool:
        """True when a ``send`` result needs no await (the write is done)."""
        return type(result) is self.written_type


class DisconnectWatch:
    """Calls ``gone(subscription)`` when ``receive()`` reports ``http.disconnect``
    (or fails), re-arming itself on any other message until the stream is closed."""

    __slots__ = ("gone", "receive", "subscription")

    def __init__(
        self,
        subscription: Subscription,
        receive: Receive,
        gone: Callable[[Subscription], None],
    ) -> None:
        self.subscription = subscription
        self.receive = receive
        self.gone = gone

    def arm(self) -> None:
        asyncio.ensure_future(self.receive()).add_done_callback(self.on_message)

    def on_message(self, waiter: asyncio.Future[Message]) -> None:
        if (
            waiter.cancelled()
            or waiter.exception() is not None
            or waiter.result().get("type") == "http.disconnect"
        ):
            self.gone(self.subscription)
        elif not self.subscription.closed.done():
            self.arm()
