"""Coalesced writes of ``EventSourceResponse(coalesce=True)``: the items a
generator has ready go out together, and while the loop is saturated a stream
holds its writes for one of the pacer's ticks (see "Catching up" and
"Saturated" in the theory of operation, ``sse_fast/starlette/__init__.py``).
The stream itself, and its writes in order, are ``_stream``'s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .._adapters import pacing as _pacing
from .._adapters.items import ensure_bytes
from .._tasks import step

if TYPE_CHECKING:
    from ._stream import _Stream

__all__ = ["BATCH_BYTES", "DEFERS_AFTER_EMPTY_HOLD"]

#: most bytes of ready items written together (see ``_Coalescer.stream_items``)
BATCH_BYTES = 64 * 1024
#: a stream whose generator had nothing ready after a hold defers this many writes
#: before it holds again (see "Saturated")
DEFERS_AFTER_EMPTY_HOLD = 16


class _Coalescer:
    """``coalesce=True``: items the generator has ready go out together, and while
    the loop is saturated a stream holds its writes for one of the pacer's ticks
    (see "Catching up" and "Saturated")."""

    def __init__(self, stream: _Stream, busy_batch_delay: float | None) -> None:
        self.stream = stream
        self.delay = busy_batch_delay or 0.0
        #: the loop's load and shared tick while events are held
        self.pacer: _pacing.Pacer | None = None
        if busy_batch_delay is not None:
            self.pacer = _pacing.pacer(stream.loop)
            self.pacer.opened()
        #: encoded items not yet written, and their size
        self.gathered: list[bytes] = []
        self.gathered_size = 0
        #: the pacer's tick at which the gathered items go out, while deferred
        self.deferred: asyncio.Future[None] | None = None
        #: writes to defer rather than hold (a generator on a timer: see "Saturated")
        self.defers_left = 0

    async def stream_items(self, iterator: AsyncIterator[Any], sep: str) -> None:
        """Write every item; items that are ready at once (the generator did not
        wait: a backlog in its queue) go out together, in one write of up to
        ``BATCH_BYTES``, so a stream that fell behind catches up at a fraction of
        the server's cost per write. When the generator must wait, what is
        gathered is written first, at once unless the loop is saturated (then
        an event is held, or its write deferred: see "Saturated")."""
        stream, gathered, pacer = self.stream, self.gathered, self.pacer
        held_back = False  # the generator was not asked while we held
        while True:
            try:
                ready, result = step(iterator.__anext__())
                if ready:
                    held_back = False
                else:
                    if held_back:  # nothing built up meanwhile: a generator on a timer
                        self.defers_left = DEFERS_AFTER_EMPTY_HOLD
                        held_back = False
                    if gathered and self.deferred is None:  # (deferred: out at the tick)
                        if pacer is not None and self.saturated(pacer):
                            self.defers_left = max(self.defers_left - 1, 0)
                            self.defer(pacer)
                        else:
                            # written behind: the generator's wait is pending, and only
                            # it may be interrupted (a timeout of its own cancels this task)
                            try:
                                self.write_gathered()
                            except BaseException:
                                await result.abandon(stream.response._cleanup_timeout)
                                raise
                    result = await result
                    if pacer is not None and not self.defers_left and self.saturated(pacer):
                        self.gather(ensure_bytes(result, sep))
                        await pacer.tick(self.delay)
                        held_back = True
                        continue
            except StopAsyncIteration:
                break
            except Exception:
                with contextlib.suppress(Exception):  # what came before still goes out
                    self.write_gathered()
                raise
            if self.gather(ensure_bytes(result, sep)) >= BATCH_BYTES:
                await stream.write(self.take_gathered())
        if gathered:
            await stream.write(self.take_gathered())

    def saturated(self, pacer: _pacing.Pacer) -> bool:
        """Hold this stream's writes? The loop is saturated and it wrote less than
        ``busy_batch_delay`` ago."""
        return pacer.busy and self.stream.loop.time() - self.stream.last_write < self.delay

    def gather(self, chunk: bytes) -> int:
        self.gathered.append(chunk)
        self.gathered_size += len(chunk)
        return self.gathered_size

    def take_gathered(self) -> bytes:
        """The gathered items as one chunk, no longer gathered (nor deferred)."""
        chunk = b"".join(self.gathered)
        self.gathered.clear()
        self.gathered_size = 0
        if self.deferred is not None:
            self.deferred.cancel()
            self.deferred = None
        return chunk

    def write_gathered(self) -> None:
        if self.gathered:
            self.stream.write_behind(self.take_gathered())

    def defer(self, pacer: _pacing.Pacer) -> None:
        """What is gathered is written at the pacer's next tick, with what comes
        until then; the generator goes on at its own pace (a hold, in
        ``stream_items``, stops asking it until the tick: see "Saturated")."""
        self.deferred = pacer.tick(self.delay)
        self.deferred.add_done_callback(self.on_tick)

    def on_tick(self, tick: asyncio.Future[None]) -> None:
        if tick is not self.deferred:
            return  # written meanwhile (take_gathered), or the stream ended
        self.deferred = None
        stream = self.stream
        if stream.ended_by is None and stream.response.active:
            try:
                self.write_gathered()
            except Exception:  # pragma: no cover - a server whose send failed
                stream.end("disconnect")

    def close(self) -> None:
        if self.deferred is not None:
            self.deferred.cancel()
            self.deferred = None
        if self.pacer is not None:
            self.pacer.closed()
            self.pacer = None
