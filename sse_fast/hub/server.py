"""The server adapter: what the hub needs to know about the ASGI server.

* Eager sends: ``SendStyle`` (``sse_fast/asgi.py``, shared with the adapters)
  tells a write Granian already did from one to await.
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

__all__ = ["DisconnectWatch"]


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
        """Wait for the next ``receive()`` message (``on_message`` handles it)."""
        asyncio.ensure_future(self.receive()).add_done_callback(self.on_message)

    def on_message(self, waiter: asyncio.Future[Message]) -> None:
        """``receive()`` returned (or failed): call ``gone`` on a disconnect or a failure, else
        wait for the next message while the stream is open."""
        if (
            waiter.cancelled()
            or waiter.exception() is not None
            or waiter.result().get("type") == "http.disconnect"
        ):
            self.gone(self.subscription)
        elif not self.subscription.closed.done():
            self.arm()
