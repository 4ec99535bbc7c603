"""Fan-out: stored events reach every subscription, fast ones never waiting for slow ones.

* ``apply`` stores sequenced events in their topics' rings and schedules one
  ``flush`` for the current loop iteration; events applied before it runs (a
  batch, or publishes that arrived while the previous fan-out ran) are
  written together. A topic's first events are announced before they are
  written (``on_first``): the pattern streams it belongs to join it there.
* An in-sync subscription is exactly at its topics' flushed positions, so it
  needs no cursor: the flush reads each dirty topic once (one coalesced bytes
  object) and calls every in-sync subscription's ASGI ``send`` with one shared
  message; subscriptions of several topics get a merge in order of position,
  computed once per distinct topic set. A stream whose topics span several of
  the broker's partitions gets each frame with its cursor as the id
  (``_cursor.py``: its own position in each partition, ``Subscription.places``),
  rewritten once per distinct topic set and cursor; the others share bytes as
  they are stored.
* A write that is not done at once (``SendStyle``, ``sse_fast/_asgi.py``: a full channel under
  Granian, or any write under a server whose ``send`` is a plain coroutine)
  still holds that message; the subscription then leaves the in-sync sets,
  keeps the flushed positions as its cursors and gets a catch-up task. The
  task awaits the pending write, then writes everything newer from the rings
  in one coalesced message per round, until nothing is pending: then it
  rejoins. No per-subscription queue exists, so memory per slow subscription
  is one pending write.
* Lag. A catching-up subscription whose cursor fell behind its ring gets a
  final ``sse-fast-disconnect`` event (reason ``lagged``) and its stream is
  closed; one whose single write stays blocked past ``catch_up_timeout`` is
  cut (``_closing.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from .._asgi import Send, SendStyle
from .._control_frames import disconnect_frame
from .._core import Lagged, send_each
from .._tasks import running_loop
from ..brokers._sequencing import Sequenced
from ..protocol import Reason
from ..settings import StreamSettings
from ._closing import Closer
from ._coding import Outcome, TopicCodings
from ._cursor import REST
from ._metrics import Metrics
from ._subscription import Subscription
from ._topics import Topic, Topics, merge_frames, read_since, with_cursors

__all__ = [
    "FanOut",
]

#: the message of every write (a copy each time, with its ``body``)
_BODY: dict[str, Any] = {"type": "http.response.body", "body": b"", "more_body": True}

log = logging.getLogger("sse_fast")


class FanOut:
    """Writes what is stored to the subscriptions of one hub."""

    def __init__(
        self,
        settings: StreamSettings,
        metrics: Metrics,
        clock: Callable[[], float],
        send_style: SendStyle,
        topics: Topics,
        closer: Closer,
        on_first: Callable[[Topic], None] | None = None,
        complete_up_to: Callable[[], int] | None = None,
    ) -> None:
        """``on_first``: told of each topic whose first events a flush writes, from the
        first pattern stream on (``patterns_opened``); ``complete_up_to``: with several
        partitions, where pattern streams' cursors' rest may rise to."""
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.send_style = send_style
        self.topics = topics
        self.closer = closer
        self._dirty: dict[Topic, None] = {}
        self._first_events = on_first
        #: told of each topic whose first events this flush writes, before it writes
        #: them (the pattern streams it belongs to join it: ``Streams.created``); None
        #: until a pattern stream opens (``patterns_opened``): the flush then looks at
        #: nothing more
        self.on_first: Callable[[Topic], None] | None = None
        #: with several partitions, where pattern streams' cursors' rest may rise to
        #: (``Broker.complete_up_to``, read once per flush; ``with_cursors``)
        self.complete_up_to = complete_up_to
        self._flush_scheduled = False
        self._accepted: list[list[Any]] = []  # [accepted_at, how many events]

    def patterns_opened(self) -> None:
        """A pattern stream opens: from now on each topic's first events are told
        (``on_first``), so that the pattern streams it matches join it."""
        self.on_first = self._first_events

    # ---------------------------------------------------------------- storing

    def apply(self, items: Sequence[Sequenced]) -> None:
        """Store sequenced events; in-sync subscriptions get them at the next flush
        (scheduled for this loop iteration, so events applied together are
        written together). A topic skips positions it already holds (a replay, or
        an event of several topics delivered once per topic). The storing is the
        core's ``TopicTable.store``: it hands back here when a store evicted frames
        streams are catching up in (they end ``lagged``)."""
        topics = self.topics
        batch = items if type(items) is list else list(items)
        now = self.clock()
        dirty = self._dirty
        # with several partitions, which events are new is told per partition (``applied``)
        accepted = self._accepted if topics.partitions == 1 else []
        start = 0
        while start < len(batch):
            start, lagging = topics.store(batch, start, now, dirty, accepted)
            if lagging is not None:
                self._drop_lagging(lagging)
            if topics.trimmed:  # the history budget evicted other topics' frames
                self._lag_trimmed()
        if topics.partitions > 1:  # the newest applied position of each partition
            topics.applied(batch, self._accepted)
        if dirty and not self._flush_scheduled:
            try:
                loop = running_loop()
            except RuntimeError:  # no loop (synchronous embedding): write now
                self.flush()
            else:
                self._flush_scheduled = True
                loop.call_soon(self.flush)

    def keep_to_budget(self) -> None:
        """The history budget enforced now (``Topics.keep_to_budget``); streams
        catching up in what it evicted end ``lagged``, as after a store."""
        self.topics.keep_to_budget()
        self._lag_trimmed()

    def _lag_trimmed(self) -> None:
        """Streams catching up in the topics the budget just trimmed: ``lagged``."""
        trimmed = self.topics.trimmed
        for topic in trimmed:
            if topic.catching_up:
                self._drop_lagging(topic)
        trimmed.clear()

    def flush_pending(self) -> None:
        """Flush now if anything is stored and not yet written (before reading the
        flushed positions as the heads, as a new subscription does)."""
        if self._dirty:
            self.flush()

    # ---------------------------------------------------------------- in sync

    def flush(self) -> None:
        """Write everything stored since the last flush to the in-sync subscriptions:
        one coalesced message per topic (single-topic subscriptions share it; the
        core's ``TopicTable.flush``), and one merge per topic set for multi-topic
        subscriptions."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        first = self.on_first
        if first is not None:
            for topic in dirty:
                if not topic.flushed:  # never flushed: these are its first events
                    first(topic)
        delivered, slow, failed, lagged, before = self.topics.flush(
            dirty, self.send_style.written_type, _BODY
        )
        for topic, lost in lagged:  # more published in one go than the ring holds
            coded = () if topic.coded is None else list(topic.coded)
            for subscription in [*topic.in_sync_members(), *topic.in_sync_multi, *coded]:
                self.lagged(subscription, lost)
        for subscription, result in slow:
            self.catch_up(subscription, result)
        for subscription in failed:  # a server whose send() raises for a gone client
            self.closer.detach(subscription)
        if before:
            self._merge(before)
            delivered += self._write_coded(before)
        self.metrics.delivered_total += delivered
        end = self.clock()
        observe = self.metrics.publish_latency.observe
        for accepted_at, count in self._accepted:
            observe(end - accepted_at, count)
        self._accepted.clear()

    def _merge(self, before: dict[Topic, int]) -> None:
        """Subscriptions of several topics: one merge in order of position per
        distinct set of their topics written to, from each topic's cursor ``before``
        the flush (its other topics have nothing new: a stream of a thousand topics,
        a pattern's, costs what its topics written to cost)."""
        multi: dict[Subscription, Send] = {}
        written: dict[Subscription, list[Topic]] = {}  # each stream's topics written to
        for topic in before:
            for subscription, send in topic.in_sync_multi.items():
                found = written.get(subscription)
                if found is None:
                    multi[subscription] = send
                    written[subscription] = [topic]
                else:
                    found.append(topic)
        # per set of topics: its merge, (bytes, count); or, for topics over several
        # partitions, its frames (``merge_frames``) and, per topic set and cursor, the
        # bytes with that cursor as each frame's id (``_place``)
        merged: dict[tuple[Any, ...], Any] = {}
        groups: dict[tuple[Any, ...], dict[Subscription, Send]] = {}
        moved: dict[tuple[Any, ...], Any] = {}
        rest = -1  # pattern streams' (``with_cursors``), read once when one needs it
        for subscription, send in multi.items():
            if subscription.state != Subscription.IN_SYNC:
                continue  # closed above (one of its topics overflowed)
            places = subscription.places
            # over several partitions, all its topics: an event copied into another
            # partition is found there (``merge_frames``)
            key: tuple[Any, ...] = (
                (None, *written[subscription]) if places is None else tuple(subscription.topics)
            )
            if key not in merged:
                cursors = {t: before.get(t, t.flushed) for t in key if t is not None}
                try:
                    merged[key] = read_since(cursors) if places is None else merge_frames(cursors)
                except Lagged as lag:
                    merged[key] = (b"", 0) if places is None else []
                    self.lagged(subscription, lag.lost)
                    continue
            if places is not None:
                if rest < 0 and REST in places and self.complete_up_to is not None:
                    rest = self.complete_up_to()  # what it says is done is stored by now
                key, subscription.places = _place(key, places, merged, moved, max(rest, 0))
            groups.setdefault(key, {})[subscription] = send
        for key, targets in groups.items():
            data, count = merged[key]
            if count:
                self._write_events(targets, data, count)

    def _write_coded(self, before: dict[Topic, int]) -> int:
        """Compressed streams of one topic: each topic's new bytes, compressed once per
        coding for its group (``_coding.py``); how many events were handed over."""
        delivered = 0
        slow: list[tuple[Subscription, Any]] = []
        failed: list[Subscription] = []
        now = self.clock()
        written = self.send_style.written_type

        def add(outcome: Outcome) -> None:
            nonlocal delivered
            delivered += outcome[0]
            slow.extend(outcome[1])
            failed.extend(outcome[2])

        for topic, start in before.items():
            coded = topic.coded
            if coded is None or not coded:
                continue
            try:
                data, _ = topic.ring.read_since(start)
            except Lagged:  # its streams were closed (``flush``)
                continue
            count = topic.flushed - start
            if count > 0:
                coded.write(data, count, now, _BODY, written, add)
        self._after_group_writes(slow, failed)
        return delivered

    def write_groups(self, data: bytes, groups: Sequence[TopicCodings]) -> None:
        """``data`` (a heartbeat) to compressed groups, through their compressors."""
        slow: list[tuple[Subscription, Any]] = []
        failed: list[Subscription] = []

        def add(outcome: Outcome) -> None:
            slow.extend(outcome[1])
            failed.extend(outcome[2])

        now = self.clock()
        for coded in groups:
            coded.write(data, 0, now, _BODY, self.send_style.written_type, add)
        self._after_group_writes(slow, failed)

    def _after_group_writes(
        self, slow: list[tuple[Subscription, Any]], failed: list[Subscription]
    ) -> None:
        for subscription, result in slow:
            self.catch_up(subscription, result)
        for subscription in failed:
            self.closer.detach(subscription)

    def _write_events(self, targets: dict[Subscription, Send], frame: bytes, events: int) -> None:
        message = {**_BODY, "body": frame}
        count = len(targets)  # before: slow subscriptions leave ``targets`` (an in-sync set)
        failed = self.write_all(targets, message)
        self.metrics.delivered_total += (count - failed) * events

    def write_all(self, targets: dict[Subscription, Send], message: dict[str, Any]) -> int:
        """Hand one message to every target's ``send``; those whose write is pending
        go to catch-up, those whose ``send`` raised are detached. Returns how many
        were detached."""
        slow: list[tuple[Subscription, Any]] = []
        failed: list[Subscription] = []
        # the core's loop (a server whose send() raises for a gone client: failed)
        send_each(targets, message, self.send_style.written_type, slow, failed)
        if slow:
            for subscription, result in slow:
                self.catch_up(subscription, result)
        if failed:
            for subscription in failed:
                self.closer.detach(subscription)
            return len(failed)
        return 0

    # ---------------------------------------------------------------- joining

    def start(self, subscription: Subscription, first_bytes: bytes) -> None:
        """Write a new stream's first bytes; join the in-sync sets, or catch up if
        that write is pending or events were stored since its cursors were taken."""
        if subscription.state == Subscription.CLOSED:
            return
        result = subscription.send(
            {"type": "http.response.body", "body": first_bytes, "more_body": True}
        )
        if self.send_style.written(result) and _at_flushed_heads(subscription.cursors):
            subscription.enter_sync()
        else:
            self.catch_up(subscription, result, dict(subscription.cursors))

    # ---------------------------------------------------------------- catching up

    def catch_up(
        self,
        subscription: Subscription,
        pending: object,
        cursors: dict[Topic, int] | None = None,
    ) -> None:
        """Leave the in-sync sets; a task writes ``pending`` then the ring backlog.

        Without ``cursors`` the subscription is where in-sync ones are: at each
        topic's flushed position (``pending`` holds everything up to it).
        """
        if subscription.state != Subscription.IN_SYNC:
            return
        subscription.leave_sync(
            cursors if cursors is not None else {t: t.flushed for t in subscription.topics}
        )
        if subscription.places is not None:  # its own from now on (``_place`` shares them)
            subscription.places = dict(subscription.places)
        subscription.task = asyncio.get_running_loop().create_task(
            self._catch_up_loop(subscription, pending)
        )

    async def _catch_up_loop(self, subscription: Subscription, pending: Any) -> None:
        timeout = self.settings.catch_up_timeout or None
        written = self.send_style.written
        try:
            while True:
                if not written(pending):
                    try:
                        async with asyncio.timeout(timeout):
                            await pending
                    except TimeoutError:
                        # a frame queued behind a write blocked this long never arrives
                        self.metrics.stall_disconnects_total += 1
                        await self.closer.cut_stalled(subscription)
                        return
                if subscription.state != Subscription.CATCHING_UP:
                    return
                try:
                    data, count = read_since(subscription.cursors, subscription.places)
                except Lagged as lag:
                    self.lagged(subscription, lag.lost)
                    return
                if not data:
                    if not _at_flushed_heads(subscription.cursors):
                        self.flush()  # the rest is stored but not yet flushed: flush it now
                    subscription.caught_up()
                    return
                self.metrics.delivered_total += count
                pending = subscription.send(
                    {"type": "http.response.body", "body": data, "more_body": True}
                )
        except Exception:  # pragma: no cover - a bug; never leave the stream hanging
            log.exception("catch-up of subscription %s failed", subscription.id)
            self.closer.close(subscription, Reason.ERROR, final=None, grace=0)

    # ---------------------------------------------------------------- lag

    def _drop_lagging(self, topic: Topic) -> None:
        """Close, with a reason, subscriptions that fell behind the ring (at once,
        not when their blocked write finally completes)."""
        for subscription in topic.lagging():
            lost = topic.ring.oldest - 1 - subscription.cursors[topic]
            self.lagged(subscription, lost)

    def lagged(self, subscription: Subscription, lost: int) -> None:
        """Close ``subscription``, which fell ``lost`` frames behind its ring, with an
        ``sse-fast-disconnect`` (``lagged``) and count it."""
        self.metrics.lag_disconnects_total += 1
        self.closer.close(
            subscription, Reason.LAGGED, final=disconnect_frame(Reason.LAGGED, lost=lost)
        )


def _place(
    key: tuple[Any, ...],
    places: dict[int, int],
    merged: dict[tuple[Any, ...], Any],
    moved: dict[tuple[Any, ...], Any],
    rest: int,
) -> tuple[tuple[Any, ...], dict[int, int]]:
    """A stream of topic set ``key`` over several partitions, at ``places``: its group
    and its places after this flush. The group's bytes (in ``merged``) are the
    topic set's frames with the cursor after each as its id, rewritten once per
    group. In-sync streams at the same places share one dict, never changed (a
    stream leaving sync takes a copy: ``FanOut.catch_up``), so a group is one
    dict's identity; ``moved`` holds, per group, the dict before (its identity
    stays its own while this flush runs) and the one after, and per topic set and
    places after, that dict (streams that came to the same places share it)."""
    group = (key, id(places))
    found = moved.get(group)
    if found is None:
        after = dict(places)
        entries = merged[key]
        data = with_cursors(entries, after, rest)
        alike = (key, *after.items())
        after = moved.setdefault(alike, after)
        merged[group] = (data, len(entries))
        moved[group] = found = (places, after)
    return group, found[1]


def _at_flushed_heads(cursors: dict[Topic, int]) -> bool:
    return all(t.ring.head == c == t.flushed for t, c in cursors.items())
