"""Each stream's wait for the client leaving: Granian's ``send`` never fails on a
closed client, so each stream waits on ``receive()`` for ``http.disconnect``;
``DisconnectWatch`` does it with a callback on each ``receive()`` rather than a task
per stream. (The other thing the hub needs to know about the ASGI server, whether a
``send`` is eager, is ``SendStyle`` in ``sse_fast/_asgi.py``, shared with the
adapters.)"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._asgi import Message, Receive

if TYPE_CHECKING:
    from ._subscription import Subscription

__all__ = ["DisconnectWatch"]


class DisconnectWatch:
    """Calls ``gone(subscription)`` when a stream's ``receive()`` reports
    ``http.disconnect`` (or fails), re-arming on any other message until the
    stream is closed.

    One per hub, for every stream: the subscription is the callback (its
    ``__call__``) and every callback runs in one shared empty context, so an idle
    stream costs no watch object, bound method or context copy of its own."""

    __slots__ = ("context", "gone")

    def __init__(self, gone: Callable[[Subscription], None]) -> None:
        self.gone = gone
        #: what the callbacks run in (``add_done_callback`` would copy the caller's)
        self.context = contextvars.Context()

    def arm(self, subscription: Subscription, receive: Receive | None = None) -> None:
        """Wait for the next message of ``receive`` (first time) or of the
        subscription's own (``on_message`` handles it)."""
        if receive is not None:
            subscription.receive = receive
            subscription.watch = self
        assert subscription.receive is not None
        asyncio.ensure_future(subscription.receive()).add_done_callback(
            subscription, context=self.context
        )

    def on_message(self, subscription: Subscription, waiter: asyncio.Future[Message]) -> None:
        """``receive()`` returned (or failed): call ``gone`` on a disconnect or a failure, else
        wait for the next message while the stream is open."""
        if (
            waiter.cancelled()
            or waiter.exception() is not None
            or waiter.result().get("type") == "http.disconnect"
        ):
            self.gone(subscription)
        elif not subscription.closed.done():
            self.arm(subscription)
