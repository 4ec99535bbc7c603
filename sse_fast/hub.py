"""The hub: topics, sequencing, fan-out, catch-up, resume, heartbeats and drain.

Theory of operation
-------------------
* Sequencing. Every published event gets a hub-global sequence number
  (``gseq``) from exactly one sequencer: the hub itself with one worker, the
  relay process with several (see ``relay.py``), so every worker applies the
  same events in the same order and holds identical rings. The SSE ``id`` is
  the publisher's id when given, else ``str(gseq)``. ``gseq`` starts at the
  wall clock in microseconds when the sequencer starts, so ids keep growing
  across restarts and an id from an earlier run is recognisably too old.
* Storage. A topic exists while it has subscribers or history. It gets its
  ``Ring`` of encoded frames (encoded once, by the sequencer) with its first
  event, and keeps the ``gseq`` of each retained frame beside it; until then
  it costs a few hundred bytes and goes with its last subscriber. Only topics
  with history count against ``max_topics``; an idle one is swept after
  ``topic_ttl``, remembering how far it went.
* Fan-out. ``apply`` stores events in the rings and schedules one ``flush``
  for the current loop iteration; events applied before it runs (a batch, or
  publishes that arrived while the previous fan-out ran) are written together.
  An in-sync ("ready") subscriber is exactly at its topics' flushed positions,
  so it needs no cursor: the flush reads each dirty topic once (one coalesced
  bytes object) and calls every ready subscriber's ASGI ``send`` with one
  shared message; subscribers of several topics get a gseq-ordered merge,
  computed once per distinct topic set. Under Granian ``send`` is eager: it
  hands the bytes over at call time and returns an already-finished awaitable
  while the connection's channel has room. Any other result (a full channel,
  or a server whose ``send`` is a plain coroutine) still holds that message;
  the subscriber then leaves the fan-out, keeps the flushed positions as its
  cursors and gets a catch-up task. The task awaits the pending write, then
  writes everything newer from the rings in one coalesced message per round,
  until nothing is pending: then it rejoins. No per-subscriber queue exists,
  so memory per slow subscriber is one pending write.
* Lag. A catching-up subscriber whose cursor fell behind its ring gets a final
  ``sse-fast-disconnect`` event (reason ``lagged``) and its stream is closed;
  one whose single write stays blocked past ``catch_up_timeout`` is closed too.
  Fast subscribers never wait for slow ones.
* Cuts. A final frame is best effort: a client that does not read cannot get
  it, and the server would keep its socket and buffered bytes for as long as
  the client keeps the connection. So a server-side close whose final write
  has not gone out within ``catch_up_timeout`` (drain: ``drain_timeout``), and
  a stalled write at once, resets the connection (``abort.py``); the stream's
  handler returns, releasing the client's per-IP slot, only then.
* Resume. ``Last-Event-ID`` (or ``lastEventId``) is resolved to a ``gseq``:
  an id found in one of the subscription's rings gives that frame's gseq; a
  number within this sequencer's range is a gseq. Each topic then resumes just
  after its last frame with ``gseq <= N``. An id that resolves to nothing is
  ``unknown``; one older than a frame some topic already evicted is
  ``evicted``. Both are reported (response header and an ``sse-fast-missed``
  event carrying the current position as its id) and the stream continues
  from now.
* Disconnects. Each stream waits on ``receive()`` for ``http.disconnect``
  (Granian's ``send`` never fails on a closed client); unsubscribing removes
  the subscriber from every set and cancels its catch-up task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from . import EncodeError, Lagged, Ring, encode
from .abort import Aborter, ConnectionKey
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("sse_fast")

TOPIC_NAME = re.compile(r"[A-Za-z0-9._~:/@!$&'()+,;=%-]+")
Send = Callable[[dict[str, Any]], Awaitable[None]]


class PublishError(ValueError):
    """A publish request is invalid; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """One validated event to publish to ``topics``."""

    topics: tuple[str, ...]
    data: Any = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class Sequenced:
    """An event after sequencing: what every worker applies."""

    gseq: int
    id: str
    topics: tuple[str, ...]
    frame: bytes
    accepted_at: float


def initial_gseq() -> int:
    return time.time_ns() // 1000


def make_frame(request: PublishRequest, event_id: str) -> bytes:
    return encode(request.data, event=request.event, id=event_id, retry=request.retry)


def sequence(
    requests: Sequence[PublishRequest], first_gseq: int, accepted_at: float
) -> list[Sequenced]:
    """Assign gseqs from ``first_gseq`` on, and encode each frame once."""
    out = []
    for offset, request in enumerate(requests):
        gseq = first_gseq + offset
        event_id = request.id if request.id is not None else str(gseq)
        out.append(
            Sequenced(gseq, event_id, request.topics, make_frame(request, event_id), accepted_at)
        )
    return out


def check_topic(name: object, settings: Settings) -> str:
    if not isinstance(name, str):
        raise PublishError(f"topic must be a string, got {type(name).__name__}")
    if not name:
        raise PublishError("topic must not be empty")
    if len(name) > settings.max_topic_length:
        raise PublishError(
            f"topic is {len(name)} characters long; the limit is {settings.max_topic_length}"
        )
    if not TOPIC_NAME.fullmatch(name):
        raise PublishError(
            f"topic {name[:50]!r} has characters outside A-Z a-z 0-9 and ._~:/@!$&'()+,;=%-"
        )
    return name


def _printable(text: str | None) -> str | None:
    return None if text is None else text.encode("utf-8", "replace").decode("utf-8")


# The ring of every topic that has no history yet: empty, never written to (a
# topic gets its own ring with its first event), so subscribing to a new name
# costs no history memory.
NO_HISTORY = Ring(1, 1)
NO_GSEQS: deque[int] = deque(maxlen=0)


class Topic:
    """One topic: its ring (from its first event on), the gseq of each retained
    frame and its subscribers."""

    __slots__ = (
        "catching",
        "flushed",
        "gseqs",
        "last_activity",
        "last_evicted_gseq",
        "name",
        "published",
        "ready",
        "ready_multi",
        "ring",
        "settings",
        "subscribers",
    )

    def __init__(self, name: str, settings: Settings, last_evicted_gseq: int, now: float) -> None:
        self.name = name
        self.settings = settings
        self.ring = NO_HISTORY
        self.gseqs: deque[int] = NO_GSEQS  # gseq of each retained frame, oldest first
        self.last_evicted_gseq = last_evicted_gseq
        self.ready: dict[Subscriber, Send] = {}  # in-sync subscribers of this topic only
        self.ready_multi: dict[Subscriber, Send] = {}  # in-sync, subscribed to several topics
        self.flushed = 0  # ring position in-sync subscribers have been written up to
        # dicts used as ordered sets: an empty dict is a third of an empty set
        self.subscribers: dict[Subscriber, None] = {}
        self.catching: dict[Subscriber, None] = {}
        self.published = 0
        self.last_activity = now

    @property
    def has_history(self) -> bool:
        return self.ring is not NO_HISTORY

    @property
    def newest_gseq(self) -> int:
        """The gseq of the newest frame this topic ever held (or its floor)."""
        return self.gseqs[-1] if self.gseqs else self.last_evicted_gseq

    def store(self, item: Sequenced) -> bool:
        """Keep one frame; True when it evicted older frames."""
        ring = self.ring
        if ring is NO_HISTORY:
            ring = self.ring = Ring(self.settings.ring_max_frames, self.settings.ring_max_bytes)
            self.gseqs = deque()
        oldest = ring.oldest
        ring.publish(item.frame, item.id)
        evicted = ring.oldest - oldest
        gseqs = self.gseqs
        for _ in range(evicted):
            self.last_evicted_gseq = gseqs.popleft()
        gseqs.append(item.gseq)
        self.published += 1
        return evicted > 0

    def lagging(self) -> list[Subscriber]:
        """Catching-up subscribers whose cursor here fell behind the ring."""
        limit = self.ring.oldest - 1
        return [s for s in self.catching if s.cursors.get(self, limit) < limit]

    def gseq_at(self, seq: int) -> int:
        return self.gseqs[seq - self.ring.oldest]

    def cursor_after(self, gseq: int) -> int:
        """Cursor just after the last retained frame with a gseq <= ``gseq``."""
        low, high = self.ring.oldest, self.ring.head
        # Find the first retained seq whose gseq > target; cursor is the one before.
        while low <= high:
            middle = (low + high) // 2
            if self.gseq_at(middle) <= gseq:
                low = middle + 1
            else:
                high = middle - 1
        return low - 1


class Subscriber:
    """One SSE stream."""

    __slots__ = (
        "__weakref__",
        "client",
        "closed",
        "connected_at",
        "connection",
        "cursors",
        "id",
        "send",
        "state",
        "task",
        "topics",
    )

    READY, CATCHING_UP, CLOSED = "ready", "catching-up", "closed"

    def __init__(
        self,
        id: int,
        send: Send,
        topics: list[Topic],
        client: str,
        now: float,
        closed: asyncio.Future[str],
        connection: ConnectionKey | None = None,
    ) -> None:
        self.id = id
        self.connection = connection  # the TCP connection to cut, when it carries only us
        self.send = send
        self.topics = topics
        self.client = client
        self.connected_at = now
        self.closed = closed
        self.cursors: dict[Topic, int] = {}
        self.state = Subscriber.READY
        self.task: asyncio.Task[None] | None = None


class _NeverDone:
    """Stands for "no eager send detected": every result is awaited."""


class Hub:
    """Topics and subscribers of one worker; see the module docstring."""

    def __init__(
        self,
        settings: Settings | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or Settings()
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.topics: dict[str, Topic] = {}
        self.topics_with_history = 0
        self.subscribers: dict[int, Subscriber] = {}
        self.first_gseq = initial_gseq()
        self.last_gseq = self.first_gseq - 1
        self.draining = False
        self._next_subscriber_id = 1
        self._done_type: type = _NeverDone
        self._swept: dict[str, int] = {}
        self._swept_floor = 0
        self._remote: Callable[[list[PublishRequest]], Awaitable[list[str]]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.aborter = Aborter()
        self._dirty: dict[Topic, None] = {}
        self._flush_scheduled = False
        self._accepted: list[float] = []
        self._heartbeat_message = {
            "type": "http.response.body",
            "body": encode(comment=""),
            "more_body": True,
        }

    # ---------------------------------------------------------------- publishing

    def use_remote_sequencer(
        self,
        submit: Callable[[list[PublishRequest]], Awaitable[list[str]]],
        first_gseq: int,
        last_gseq: int,
    ) -> None:
        """Hand sequencing to the relay (several workers); it calls ``apply``."""
        self._remote = submit
        self.first_gseq = first_gseq
        self.last_gseq = last_gseq

    def validate_new_topics(self, requests: Iterable[PublishRequest]) -> None:
        """Refuse a publish that would give more than ``max_topics`` topics a
        history. Subscribing never counts: a topic without history costs a few
        hundred bytes and vanishes with its last subscriber."""
        topics = self.topics
        new = {
            name
            for request in requests
            for name in request.topics
            if name not in topics or not topics[name].has_history
        }
        if self.topics_with_history + len(new) > self.settings.max_topics:
            raise PublishError(
                f"topic limit reached ({self.settings.max_topics} topics with history); "
                "publish to existing topics or raise max_topics",
                status=503,
            )

    async def publish(self, requests: Sequence[PublishRequest]) -> list[str]:
        """Publish validated events; return their ids. Nothing is published on error."""
        if not requests:
            return []
        self.validate_new_topics(requests)
        if self._remote is not None:
            return await self._remote(list(requests))
        return self._publish_local(requests, self.clock())

    def _publish_local(self, requests: Sequence[PublishRequest], accepted_at: float) -> list[str]:
        try:
            items = sequence(requests, self.last_gseq + 1, accepted_at)
        except EncodeError as exc:
            raise PublishError(str(exc)) from None
        self.apply(items)
        return [item.id for item in items]

    def publish_nowait(self, requests: Sequence[PublishRequest]) -> list[str]:
        """Synchronous publish for single-worker embedding (no relay)."""
        if self._remote is not None:
            raise RuntimeError("publish_nowait() needs the local sequencer; use await publish()")
        self.validate_new_topics(requests)
        return self._publish_local(requests, self.clock())

    def apply(self, items: Sequence[Sequenced]) -> None:
        """Store sequenced events; in-sync subscribers get them at the next flush
        (scheduled for this loop iteration, so events applied together are
        written together)."""
        metrics = self.metrics
        now = self.clock()
        dirty = self._dirty
        for item in items:
            if item.gseq <= self.last_gseq:
                continue  # already applied (relay replay after reconnect)
            self.last_gseq = item.gseq
            for name in item.topics:
                topic = self._topic(name, now)
                if not topic.has_history:
                    self.topics_with_history += 1
                if topic.store(item) and topic.catching:
                    self._drop_lagging(topic)
                dirty[topic] = None
            metrics.published_total += 1
            self._accepted.append(item.accepted_at)
        if dirty and not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (synchronous embedding): write now
                self.flush()
            else:
                self._flush_scheduled = True
                loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything stored since the last flush to the in-sync subscribers:
        one coalesced message per topic (single-topic subscribers share it), and
        one gseq-ordered merge per topic set for multi-topic subscribers."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        before: dict[Topic, int] = {}
        multi: dict[Subscriber, Send] = {}
        for topic in dirty:
            before[topic] = topic.flushed
            try:
                data, topic.flushed = topic.ring.read_since(topic.flushed)
                count = topic.flushed - before[topic]
            except Lagged as lag:  # more published in one go than the ring holds
                topic.flushed = topic.ring.head
                for subscriber in list(topic.ready) + list(topic.ready_multi):
                    self._lagged(subscriber, lag.lost)
                continue
            if topic.ready:
                self._fan_out(topic.ready, data, count)
            if topic.ready_multi:
                multi.update(topic.ready_multi)
        if multi:
            merged: dict[tuple[Topic, ...], tuple[bytes, int]] = {}
            groups: dict[tuple[Topic, ...], dict[Subscriber, Send]] = {}
            for subscriber, send in multi.items():
                if subscriber.state != Subscriber.READY:
                    continue  # closed above (one of its topics overflowed)
                key = tuple(subscriber.topics)
                if key not in merged:
                    try:
                        merged[key] = self._read({t: before.get(t, t.flushed) for t in key})
                    except Lagged as lag:
                        merged[key] = (b"", 0)
                        self._lagged(subscriber, lag.lost)
                        continue
                groups.setdefault(key, {})[subscriber] = send
            for key, targets in groups.items():
                data, count = merged[key]
                if count:
                    self._fan_out(targets, data, count)
        end = self.clock()
        observe = self.metrics.publish_latency.observe
        for accepted_at in self._accepted:
            observe(end - accepted_at)
        self._accepted.clear()

    def _drop_lagging(self, topic: Topic) -> None:
        """Disconnect, with a reason, subscribers that fell behind the ring (at once,
        not when their blocked write finally completes)."""
        for subscriber in topic.lagging():
            lost = topic.ring.oldest - 1 - subscriber.cursors[topic]
            self._lagged(subscriber, lost)

    def _lagged(self, subscriber: Subscriber, lost: int) -> None:
        self.metrics.lag_disconnects_total += 1
        self.close(
            subscriber,
            "lagged",
            final=encode(
                orjson.dumps({"reason": "lagged", "lost": lost}).decode(),
                event="sse-fast-disconnect",
            ),
        )

    def _fan_out(self, targets: dict[Subscriber, Send], frame: bytes, events: int) -> None:
        message = {"type": "http.response.body", "body": frame, "more_body": True}
        count = len(targets)  # before: slow subscribers leave ``targets`` (a ready set)
        failed = self._write_all(targets, message)
        self.metrics.delivered_total += (count - failed) * events

    def _write_all(self, targets: dict[Subscriber, Send], message: dict[str, Any]) -> int:
        """Hand one message to every target's ``send``; those whose write is pending
        go to catch-up, those whose ``send`` raised are dropped. Returns how many
        were dropped."""
        done = self._done_type
        slow = None
        failed = None
        for subscriber, send in targets.items():
            try:
                result = send(message)
            except Exception:  # a server whose send() raises for a gone client
                if failed is None:
                    failed = []
                failed.append(subscriber)
                continue
            if type(result) is not done:
                if slow is None:
                    slow = []
                slow.append((subscriber, result))
        if slow:
            for subscriber, result in slow:
                self._catch_up(subscriber, result)
        if failed:
            for subscriber in failed:
                self.disconnected(subscriber)
            return len(failed)
        return 0

    def _topic(self, name: str, now: float) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            floor = max(self._swept.pop(name, 0), self._swept_floor)
            topic = self.topics[name] = Topic(name, self.settings, floor, now)
        topic.last_activity = now
        return topic

    # ---------------------------------------------------------------- subscribing

    def learn_send(self, start_result: object) -> None:
        """Detect Granian's eager ``send`` from the result of a response start."""
        if self._done_type is _NeverDone and type(start_result).__name__ == "PyEmptyAwaitable":
            self._done_type = type(start_result)

    def is_done(self, result: object) -> bool:
        """True when a ``send`` result needs no await (Granian's eager send)."""
        return type(result) is self._done_type

    def resolve_resume(
        self, topics: Sequence[Topic], last_event_id: str | None
    ) -> tuple[str, dict[Topic, int]]:
        """Resume outcome (``none``, ``resumed``, ``unknown``, ``evicted``) and cursors."""
        heads = {topic: topic.ring.head for topic in topics}
        if not last_event_id:
            return "none", heads
        target: int | None = None
        for topic in topics:
            seq = topic.ring.resume(last_event_id)
            if seq is not None:
                target = topic.gseq_at(seq)
                break
        if (
            target is None
            and last_event_id.isascii()
            and last_event_id.isdigit()
            and len(last_event_id) <= 20
        ):
            number = int(last_event_id)
            if self.first_gseq - 1 <= number <= self.last_gseq:
                target = number
        if target is None:
            return "unknown", heads
        if any(topic.last_evicted_gseq > target for topic in topics):
            return "evicted", heads
        return "resumed", {topic: topic.cursor_after(target) for topic in topics}

    def open(
        self,
        send: Send,
        topic_names: Sequence[str],
        client: str,
        last_event_id: str | None,
        connection: ConnectionKey | None = None,
    ) -> tuple[Subscriber, str, bytes]:
        """Register a stream; return it, the resume outcome and its first bytes.

        The first bytes (retry, position or missed event, backlog) must be
        written by the caller with ``start`` right away, before any await.
        """
        if self._dirty:
            self.flush()  # positions below are "flushed" positions: make them the heads
        now = self.clock()
        topics = [self._topic(name, now) for name in topic_names]
        status, cursors = self.resolve_resume(topics, last_event_id)
        loop = asyncio.get_running_loop()
        subscriber = Subscriber(
            self._next_subscriber_id, send, topics, client, now, loop.create_future(), connection
        )
        self._next_subscriber_id += 1
        parts = []
        if status in ("none", "resumed"):
            parts.append(
                encode(
                    retry=self.settings.retry_ms,
                    id=None if status == "resumed" else str(self.last_gseq),
                )
            )
        else:
            self.metrics.resume_total[status] += 1
            parts.append(
                encode(
                    orjson.dumps(
                        # bytes that were not UTF-8 (lone surrogates) are shown as "?"
                        {"reason": status, "last_event_id": _printable(last_event_id)}
                    ).decode(),
                    event="sse-fast-missed",
                    id=str(self.last_gseq),
                    retry=self.settings.retry_ms,
                )
            )
        if status == "resumed":
            self.metrics.resume_total["resumed"] += 1
            parts.append(self._read(cursors)[0])
        subscriber.cursors = cursors  # its position once the first bytes are written
        self.subscribers[subscriber.id] = subscriber
        for topic in topics:
            topic.subscribers[subscriber] = None
        self.metrics.connections_total += 1
        return subscriber, status, b"".join(parts)

    def start(self, subscriber: Subscriber, first_bytes: bytes) -> None:
        """Write the first bytes and join the fan-out, or catch up if that write is
        pending or events were published since ``open``."""
        if subscriber.state == Subscriber.CLOSED:
            return
        result = subscriber.send(
            {"type": "http.response.body", "body": first_bytes, "more_body": True}
        )
        if type(result) is self._done_type and self._at_flushed_heads(subscriber.cursors):
            self._join(subscriber)
        else:
            self._catch_up(subscriber, result, dict(subscriber.cursors))

    @staticmethod
    def _at_flushed_heads(cursors: dict[Topic, int]) -> bool:
        return all(t.ring.head == c == t.flushed for t, c in cursors.items())

    def _join(self, subscriber: Subscriber) -> None:
        """Enter the fan-out; the caller checked it is at every topic's flushed head."""
        subscriber.state = Subscriber.READY
        subscriber.cursors.clear()
        if len(subscriber.topics) == 1:
            subscriber.topics[0].ready[subscriber] = subscriber.send
        else:
            for topic in subscriber.topics:
                topic.ready_multi[subscriber] = subscriber.send

    @staticmethod
    def _read(cursors: dict[Topic, int]) -> tuple[bytes, int]:
        """Everything newer than ``cursors`` (advanced in place), and how many events.

        One topic: one coalesced ring read. Several: frames merged in gseq
        order, an event published to several of the topics written once.
        """
        if len(cursors) == 1:
            ((topic, cursor),) = cursors.items()
            data, cursors[topic] = topic.ring.read_since(cursor)
            return data, cursors[topic] - cursor
        entries: dict[int, bytes] = {}
        for topic, cursor in cursors.items():
            frames = topic.ring.read_frames(cursor)
            for offset, frame in enumerate(frames, start=cursor + 1):
                entries.setdefault(topic.gseq_at(offset), frame)
            cursors[topic] = cursor + len(frames)
        if len(entries) == 1:
            return next(iter(entries.values())), 1
        return b"".join(entries[g] for g in sorted(entries)), len(entries)

    # ---------------------------------------------------------------- slow path

    def _catch_up(
        self, subscriber: Subscriber, pending: object, cursors: dict[Topic, int] | None = None
    ) -> None:
        """Leave the fan-out; a task writes ``pending`` then the ring backlog.

        Without ``cursors`` the subscriber is where in-sync subscribers are: at
        each topic's flushed position (``pending`` holds everything up to it).
        """
        if subscriber.state != Subscriber.READY:
            return
        subscriber.state = Subscriber.CATCHING_UP
        for topic in subscriber.topics:
            topic.ready.pop(subscriber, None)
            topic.ready_multi.pop(subscriber, None)
            topic.catching[subscriber] = None
        subscriber.cursors = (
            cursors if cursors is not None else {t: t.flushed for t in subscriber.topics}
        )
        task = asyncio.get_running_loop().create_task(self._catch_up_loop(subscriber, pending))
        subscriber.task = task

    async def _catch_up_loop(self, subscriber: Subscriber, pending: Any) -> None:
        timeout = self.settings.catch_up_timeout or None
        try:
            while True:
                if type(pending) is not self._done_type:
                    try:
                        await asyncio.wait_for(pending, timeout)
                    except asyncio.TimeoutError:
                        # a frame queued behind a write blocked this long never arrives
                        self.metrics.stall_disconnects_total += 1
                        self._forget(subscriber)
                        await self._cut(subscriber)
                        self._closed(subscriber, "stalled")
                        return
                if subscriber.state != Subscriber.CATCHING_UP:
                    return
                try:
                    data, count = self._read(subscriber.cursors)
                except Lagged as lag:
                    self._lagged(subscriber, lag.lost)
                    return
                if not data:
                    if not self._at_flushed_heads(subscriber.cursors):
                        self.flush()  # the rest is stored but not yet flushed: flush it now
                    subscriber.task = None
                    for topic in subscriber.topics:
                        topic.catching.pop(subscriber, None)
                    self._join(subscriber)
                    return
                self.metrics.delivered_total += count
                pending = subscriber.send(
                    {"type": "http.response.body", "body": data, "more_body": True}
                )
        except Exception:  # pragma: no cover - a bug; never leave the stream hanging
            log.exception("catch-up of subscriber %s failed", subscriber.id)
            self.close(subscriber, "error", final=None, grace=0)

    # ---------------------------------------------------------------- closing

    def close(
        self,
        subscriber: Subscriber,
        reason: str,
        final: bytes | None,
        grace: float | None = None,
    ) -> None:
        """End a stream from the server side: optional final frame, then end of body.

        The final frame is best effort: a client that does not read cannot get
        it. If that write has not gone out within ``grace`` seconds (default
        ``catch_up_timeout``, or 30 s when that is off) the connection is cut
        (``abort.py``). The stream's handler returns when either is done, so
        the client's per-IP slot is released only once its socket is gone.
        """
        if subscriber.state == Subscriber.CLOSED:
            return
        self._forget(subscriber)
        result = subscriber.send(
            {"type": "http.response.body", "body": final or b"", "more_body": False}
        )
        if type(result) is self._done_type:
            self._closed(subscriber, reason)
            return
        if grace is None:
            grace = self.settings.catch_up_timeout or 30.0
        self._spawn(self._finish_or_cut(result, subscriber, reason, grace))

    async def _finish_or_cut(
        self, result: Any, subscriber: Subscriber, reason: str, grace: float
    ) -> None:
        try:
            await asyncio.wait_for(result, grace)
        except Exception:  # timed out (or the server's send failed): cut it
            await self._cut(subscriber)
        self._closed(subscriber, reason)

    async def _cut(self, subscriber: Subscriber) -> None:
        """Reset the subscriber's TCP connection (when it carries only this stream)."""
        key = subscriber.connection
        if key is not None and not subscriber.closed.done() and await self.aborter.abort(key):
            self.metrics.cut_total += 1

    @staticmethod
    def _closed(subscriber: Subscriber, reason: str) -> None:
        if not subscriber.closed.done():
            subscriber.closed.set_result(reason)

    def expire(self, subscriber: Subscriber) -> None:
        """The subscriber's token expired: end the stream, saying so."""
        self.close(
            subscriber,
            "token-expired",
            final=encode('{"reason":"token-expired"}', event="sse-fast-disconnect"),
        )

    def disconnected(self, subscriber: Subscriber) -> None:
        """The client went away (``http.disconnect``): free everything."""
        if subscriber.state != Subscriber.CLOSED:
            self._forget(subscriber)
        if not subscriber.closed.done():
            subscriber.closed.set_result("client-disconnected")

    def _forget(self, subscriber: Subscriber) -> None:
        subscriber.state = Subscriber.CLOSED
        self.subscribers.pop(subscriber.id, None)
        now = self.clock()
        for topic in subscriber.topics:
            topic.ready.pop(subscriber, None)
            topic.ready_multi.pop(subscriber, None)
            topic.catching.pop(subscriber, None)
            topic.subscribers.pop(subscriber, None)
            topic.last_activity = now
            if not topic.subscribers and not topic.has_history:
                self._drop_topic(topic)
        subscriber.cursors.clear()
        task, subscriber.task = subscriber.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- periodic work

    def heartbeat(self) -> int:
        """Send a keep-alive comment to every in-sync stream; return how many."""
        targets = {s: s.send for s in self.subscribers.values() if s.state == Subscriber.READY}
        count = len(targets)
        self._write_all(targets, self._heartbeat_message)
        return count

    def sweep(self) -> int:
        """Drop idle topics (no subscriber, no activity for ``topic_ttl``)."""
        cutoff = self.clock() - self.settings.topic_ttl
        idle = [
            name
            for name, topic in self.topics.items()
            if not topic.subscribers and topic.last_activity < cutoff
        ]
        for name in idle:
            self._drop_topic(self.topics[name])
        return len(idle)

    def _drop_topic(self, topic: Topic) -> None:
        """Forget a topic nobody subscribes to, remembering how far it went (so a
        Last-Event-ID from its past resolves to ``evicted``, not ``unknown``)."""
        if self.topics.get(topic.name) is not topic:
            return
        del self.topics[topic.name]
        if topic.has_history:
            self.topics_with_history -= 1
        newest = topic.newest_gseq
        if newest > self._swept_floor:
            self._swept[topic.name] = newest
        while len(self._swept) > self.settings.max_topics:
            oldest = next(iter(self._swept))
            self._swept_floor = max(self._swept_floor, self._swept.pop(oldest))

    async def run_periodic(self) -> None:
        """Heartbeats and topic sweeping until cancelled."""
        interval = self.settings.heartbeat_interval
        last_sweep = self.clock()
        while True:
            await asyncio.sleep(interval if interval > 0 else 60.0)
            if interval > 0:
                self.heartbeat()
            if self.clock() - last_sweep >= 60.0:
                last_sweep = self.clock()
                self.sweep()

    async def drain(self) -> None:
        """Close every stream with a jittered ``retry`` so clients reconnect elsewhere
        (spread out). Final writes not done within ``drain_timeout`` are cut, so
        the server can stop: the whole drain takes ``drain_timeout`` plus the time
        of one cut (under a second) at most."""
        self.draining = True
        jitter = self.settings.drain_retry_jitter_ms
        grace = self.settings.drain_timeout
        closing = list(self.subscribers.values())
        for subscriber in closing:
            delay = self.settings.retry_ms + random.randint(0, jitter)
            self.close(
                subscriber,
                "draining",
                final=encode('{"reason":"draining"}', event="sse-fast-disconnect", retry=delay),
                grace=grace,
            )
        waiting = [s.closed for s in closing if not s.closed.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=grace + 0.9)
        for subscriber in closing:
            self._closed(subscriber, "draining")

    def stats(
        self, with_connections: bool = False, offset: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        """Figures for ``/stats``: totals, and one page (``offset``, ``limit``) of the
        topics and, with ``with_connections``, of the connections. ``next_offset``
        is the offset of the next page, or None after the last."""
        page = itertools.islice(self.topics.items(), offset, offset + limit)
        topics = {
            name: {
                "subscribers": len(topic.subscribers),
                "published": topic.published,
                "retained": len(topic.ring),
                "retained_bytes": topic.ring.nbytes,
                "evicted": topic.ring.evicted,
            }
            for name, topic in page
        }
        more = offset + limit < len(self.topics)
        out: dict[str, Any] = {
            "connections": len(self.subscribers),
            "topics_total": len(self.topics),
            "topics_with_history": self.topics_with_history,
            "topics": topics,
            "last_id": str(self.last_gseq),
            "draining": self.draining,
            "eager_send": self._done_type is not _NeverDone,
        }
        if with_connections:
            now = self.clock()
            connections = itertools.islice(self.subscribers.values(), offset, offset + limit)
            out["connection_list"] = [
                {
                    "id": s.id,
                    "client": s.client,
                    "topics": [t.name for t in s.topics],
                    "state": s.state,
                    "connected_seconds": round(now - s.connected_at, 3),
                    "behind": sum(t.ring.head - c for t, c in s.cursors.items()),
                }
                for s in connections
            ]
            more = more or offset + limit < len(self.subscribers)
        out["next_offset"] = offset + limit if more else None
        return out
