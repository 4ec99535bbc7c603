"""Closing: streams end from the server side, or because the client went away.

* A server-side close (lag, stall, token expiry, drain, an error) writes an
  optional final frame and ends the body. The final frame is best effort: a
  client that does not read cannot get it, and the server would keep its
  socket and buffered bytes for as long as the client keeps the connection.
  So a close whose final write has not gone out within ``catch_up_timeout``
  (drain: ``drain_timeout``), and a stalled write at once, resets the
  connection (``_abort.py``); the stream's handler returns, releasing the
  client's per-IP slot, only then.
* A client that goes away (``http.disconnect``) is detached: the subscription
  leaves every set, its catch-up task is cancelled, a topic without history
  goes with its last subscriber.
In both cases the stream leaves the hub through ``Streams.leave`` (``_streams.py``,
where it joined), and ``subscription.closed`` resolves with the reason, which is
what the stream's handler waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from .._abort import Aborter
from .._asgi import SendStyle
from ..protocol import Reason
from ..settings import StreamSettings
from ._metrics import Metrics
from ._streams import Streams
from ._subscription import Subscription

__all__ = [
    "Closer",
]


class Closer:
    """Ends streams and frees what they held."""

    def __init__(
        self,
        settings: StreamSettings,
        metrics: Metrics,
        send_style: SendStyle,
        streams: Streams,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.send_style = send_style
        self.streams = streams
        self.aborter = Aborter()
        self._tasks: set[asyncio.Task[Any]] = set()

    def close(
        self,
        subscription: Subscription,
        reason: str,
        final: bytes | None,
        grace: float | None = None,
    ) -> None:
        """End a stream from the server side: optional final frame, then end of body.

        If that write has not gone out within ``grace`` seconds (default
        ``catch_up_timeout``, or 30 s when that is off) the connection is cut.
        """
        if subscription.state == Subscription.CLOSED:
            return
        self.streams.leave(subscription)
        result = subscription.send(
            {"type": "http.response.body", "body": final or b"", "more_body": False}
        )
        if self.send_style.written(result):
            self.resolve(subscription, reason)
            return
        if grace is None:
            grace = self.settings.catch_up_timeout or 30.0
        self._spawn(self._finish_or_cut(result, subscription, reason, grace))

    async def _finish_or_cut(
        self, result: Any, subscription: Subscription, reason: str, grace: float
    ) -> None:
        try:
            async with asyncio.timeout(grace):
                await result
        except Exception:  # timed out (or the server's send failed): cut it
            await self.cut(subscription)
        self.resolve(subscription, reason)

    async def cut_stalled(self, subscription: Subscription) -> None:
        """A write stayed blocked too long: out of the hub, the connection cut, the
        stream over (``stalled``)."""
        self.streams.leave(subscription)
        await self.cut(subscription)
        self.resolve(subscription, Reason.STALLED)

    async def cut(self, subscription: Subscription) -> None:
        """Reset the subscription's TCP connection (when it carries only this stream)."""
        key = subscription.connection
        if key is not None and not subscription.closed.done() and await self.aborter.abort(key):
            self.metrics.cut_total += 1

    @staticmethod
    def resolve(subscription: Subscription, reason: str) -> None:
        """The stream is over: its handler may return."""
        if not subscription.closed.done():
            subscription.closed.set_result(reason)

    def detach(self, subscription: Subscription, reason: str = Reason.CLIENT_DISCONNECTED) -> None:
        """The client went away (or the handler is leaving): free everything."""
        self.streams.leave(subscription)  # nothing if it has left already
        self.resolve(subscription, reason)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
