"""``Publisher.publish`` calls made together go in one request (``PublishBatches``).

Theory of operation
-------------------
A web app publishes one notification per request it serves, from many tasks at
once; one ``POST /publish`` per call spends most of the server's time on HTTP.
So the calls queue here, and a request carries every call queued by then (up to
``batch_size`` events and ``max_body_bytes``). It goes out:

* when nothing is in flight: a call made while the publisher is idle goes at once,
  alone (no added delay);
* while requests are in flight, when at least as many calls wait as those requests
  carry together, and one of the publisher's ``connections`` is free. Under load the
  requests so grow with it (1, 1, 2, 4, ... calls) instead of splitting it into many
  small ones, and a second request is at the server while the client turns the
  first one's answers into new calls. The server's cost per event falls with the
  size of its requests (with 10,000 subscribers on topics of their own, about 23 us
  per event in requests of ~16 calls, 18 in requests of ~64: ``benches/
  notifications.py``), and a server kept busy is what bounds how many calls a
  second a few dozen waiting callers can make (their number over a call's time).
  Calls that wait get the next request that goes: at most until the requests in
  flight are answered.

* Each call keeps its own answer. A batch's ids are handed out in order. The
  server refuses a batch whole (one bad event, 4xx), so a refused batch of
  several calls is sent again one call per request, each for its own answer: the
  bad one fails, the others are published. A batch that may have been published
  (no answer, 503) is retried as a whole when every event has an id (the server
  publishes an id once: exactly once); otherwise the calls with an id are sent
  again alone and the others fail with ``maybe_published``, as a lone call would.
* Order per topic. A call waits while an earlier call of one of its topics is
  queued or in flight in another request, so the events of a topic are sent (and
  so published) in the order of the calls; other topics pass. Two calls with one
  id never share a request (the server refuses a batch that repeats an id).
* A call whose caller is cancelled before it was sent is not sent (once sent,
  it may be published, as any request may).
* Closing the publisher sends what is queued and waits for the answers; a close
  cancelled meanwhile leaves the requests in flight to finish. A request itself
  cancelled (the loop closing) fails its calls with ``maybe_published``: no caller
  waits for good.

The same queue carries ``sse_fast.brokers.redis.publish``'s calls made together into
one script call (``brokers/redis/_direct.py``): what a request is, and what a call of a
failed one gets, are given (``join``, ``failed``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._tasks import running_loop

__all__ = ["PublishBatches"]

_BATCH_OPEN = b'{"events":['
_BATCH_CLOSE = b"]}"
#: what wrapping events in a batch adds to their bytes
BATCH_OVERHEAD = len(_BATCH_OPEN) + len(_BATCH_CLOSE)


def batch_body(encoded: list[bytes]) -> bytes:
    """A ``POST /publish`` body of several encoded events."""
    return _BATCH_OPEN + b",".join(encoded) + _BATCH_CLOSE


def _body(encoded: list[bytes]) -> bytes:
    """The ``POST /publish`` body of some calls: one event alone, several in a batch."""
    return encoded[0] if len(encoded) == 1 else batch_body(encoded)


class _Call:
    """One ``publish`` call: its event (``payload``, of ``size`` bytes), its topics and
    id, and its answer."""

    __slots__ = ("alone", "future", "id", "payload", "size", "topics")

    def __init__(
        self,
        payload: Any,
        size: int,
        topics: tuple[str, ...],
        id: str | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.payload = payload
        self.size = size
        self.topics = topics
        self.id = id
        self.future: asyncio.Future[str] = loop.create_future()
        #: sent in a request of its own (its batch was refused)
        self.alone = False

    def answer(self, event_id: str | None, error: BaseException | None = None) -> None:
        if self.future.done():  # its caller was cancelled
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            assert event_id is not None
            self.future.set_result(event_id)


class PublishBatches:
    """The queue of ``publish`` calls and the requests carrying them.

    ``post(request, idempotent)`` sends one request and returns its events' ids;
    ``join(payloads)`` makes the request of some calls' payloads (by default a ``POST
    /publish`` body: one event's JSON alone, several wrapped); ``failed(error, status,
    maybe_published)`` is what a call of a request that failed gets."""

    def __init__(
        self,
        post: Callable[[Any, bool], Awaitable[list[str]]],
        connections: int,
        batch_size: int,
        max_body_bytes: int,
        failed: Callable[[Exception, int, bool], BaseException],
        join: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self._post = post
        self._join = join or _body
        self._connections = max(1, connections)
        self._batch_size = max(1, batch_size)
        self._max_body_bytes = max_body_bytes
        self._failed = failed
        self._queue: deque[_Call] = deque()
        #: topics of the requests in flight: how many of their calls (none: not there)
        self._busy: dict[str, int] = {}
        #: the requests in flight, each with the number of calls it carries
        self._sends: dict[asyncio.Task[None], int] = {}
        #: requests sent, and calls they carried (``batched / requests``: calls per request)
        self.requests = 0
        self.batched = 0
        #: the most requests in flight at once
        self.in_flight_max = 0

    async def publish(
        self, payload: Any, topics: Sequence[str], id: str | None, size: int | None = None
    ) -> str:
        """Queue one call (``payload``: the event as ``join`` takes it, by default its
        JSON; ``size``: its bytes in a request, by default ``len(payload)``) and wait for
        its id."""
        call = _Call(
            payload,
            len(payload) if size is None else size,
            tuple(topics),
            id,
            running_loop(),
        )
        self._queue.append(call)
        self._pump()
        return await call.future

    async def close(self) -> None:
        """Send what is queued and wait for every answer. Cancelled (a time limit on the
        close), it stops waiting and leaves the requests in flight to finish: their calls,
        other tasks' awaits, still get their answers (a gather cancelled its requests)."""
        while self._sends:
            await asyncio.wait(set(self._sends))

    def _pump(self) -> None:
        sends = self._sends
        while self._queue and len(sends) < self._connections:
            if sends and len(self._queue) < sum(sends.values()):
                return  # fewer wait than the requests in flight carry: the next answer
            batch = self._take()
            if not batch:
                return  # what is queued waits for a topic in flight
            topics = [t for call in batch for t in call.topics]
            busy = self._busy  # now: the next take must see them in flight
            for topic in topics:
                busy[topic] = busy.get(topic, 0) + 1
            task = running_loop().create_task(self._send(batch, topics))
            sends[task] = len(batch)
            self.in_flight_max = max(self.in_flight_max, len(sends))

    def _take(self) -> list[_Call]:
        """The next request's calls, in order: a call of a topic in flight, or of a topic
        of an earlier call left queued, waits (order per topic); so does an id already in
        the request, and a call to be sent alone unless it comes first."""
        batch: list[_Call] = []
        left: deque[_Call] = deque()
        blocked: set[str] = set()
        ids: set[str] = set()
        size = BATCH_OVERHEAD
        queue = self._queue
        busy = self._busy
        while queue:
            call = queue.popleft()
            if call.future.done():  # its caller was cancelled before it was sent: not sent
                continue
            full = len(batch) >= self._batch_size or (
                batch and size + call.size + 1 > self._max_body_bytes
            )
            topics = call.topics
            waits = (
                full
                or (call.alone and batch)
                or (batch and batch[0].alone)
                or (call.id is not None and call.id in ids)
                or (
                    topics[0] in blocked or topics[0] in busy
                    if len(topics) == 1
                    else any(t in blocked or t in busy for t in topics)
                )
            )
            if waits:
                left.append(call)
                blocked.update(call.topics)
                if full:
                    break
                continue
            batch.append(call)
            size += call.size + 1
            if call.id is not None:
                ids.add(call.id)
        left.extend(queue)
        self._queue = left
        return batch

    async def _send(self, batch: list[_Call], topics: list[str]) -> None:
        self.requests += 1
        self.batched += len(batch)
        try:
            await self._carry(batch)
        finally:
            busy = self._busy
            for topic in topics:
                left = busy[topic] - 1
                if left:
                    busy[topic] = left
                else:
                    del busy[topic]
            self._sends.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._pump()

    async def _carry(self, batch: list[_Call]) -> None:
        try:
            await self._answer(batch)
        except asyncio.CancelledError:  # (the loop closing): no caller left waiting for good
            error = RuntimeError("the publisher stopped while this publish was in flight")
            for call in batch:
                call.answer(None, self._failed(error, 0, True))
            raise

    async def _answer(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            call = batch[0]
            try:
                (event_id,) = await self._post(self._join([call.payload]), call.id is not None)
            except Exception as exc:  # the call's own answer, as a lone publish gives it
                call.answer(None, exc)
            else:
                call.answer(event_id)
            return
        idempotent = all(call.id is not None for call in batch)
        try:
            ids = await self._post(self._join([c.payload for c in batch]), idempotent)
        except Exception as exc:
            self._refused(batch, exc, idempotent)
            return
        for call, event_id in zip(batch, ids, strict=True):
            call.answer(event_id)

    def _refused(self, batch: list[_Call], exc: Exception, idempotent: bool) -> None:
        """A batch of several calls failed: each call gets its own answer."""
        status: int = getattr(exc, "status", 0)
        maybe: bool = getattr(exc, "maybe_published", False)
        if 400 <= status < 500 and status != 429:
            again = batch  # refused whole: one bad event; each alone for its own answer
        elif maybe and not idempotent:
            again = [call for call in batch if call.id is not None]  # safe to send again
            for call in batch:
                if call.id is None:
                    call.answer(None, self._failed(exc, status, True))
        else:  # not published (after the retries), or retried already as a whole
            for call in batch:
                call.answer(None, self._failed(exc, status, maybe))
            return
        for call in reversed(again):
            call.alone = True
            self._queue.appendleft(call)

    @property
    def waiting(self) -> int:
        """Calls queued, not yet in a request."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._sends)

    def figures(self) -> dict[str, Any]:
        """Requests sent, the calls they carried, and the most in flight at once."""
        return {
            "requests": self.requests,
            "calls": self.batched,
            "in_flight_max": self.in_flight_max,
        }
