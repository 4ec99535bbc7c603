"""Compressed streams: which bytes each stream that asked for a content coding sends.

The compressors themselves (codings, shared segments, leaving and joining) are
``sse_fast/_compression.py``'s; this is how the hub's streams use them.

* Which streams. ``Compression.choose``: the coding of ``Accept-Encoding`` among
  ``compression_codings`` for a stream of one topic (``compression`` ``topics``,
  the default, or ``all``), and for one of several topics or patterns only with
  ``all`` and when none of its topics is private (``mixes_private``): a context
  never holds a private topic's text beside another topic's (the security page).

* A stream that negotiated a coding (``Hub.attach(coding=...)``) writes through its
  ``CodedStream``, which stands in for its ``send``: every write the fan-out does
  not make from its topic's shared bytes (its opening and resumed backlog, catch-up
  rounds, control frames, its last write, a stream of several topics' merges) is
  compressed there, for it alone. A stream of several topics or patterns keeps a
  compressor of its own (``own``, a small window: its context spans its topics,
  which is why such streams are compressed only when asked, ``--compression all``);
  a stream of one topic has none: its own writes are *independent* (no context
  before or after: ``Coding.independent``, one compressor per hub), so it costs
  no compressor's memory, ever. The first write carries the coding's header.
  ``compression_context`` changes the last: ``stream`` gives every stream a
  compressor of its own, ``event`` keeps a topic's streams on independent writes
  (no shared compressor); ``topic`` is the default, below.
* The streams of one topic in sync with it are the topic's (``Topic.coded``, a
  ``TopicCodings``: per coding one ``TopicCoding``). Each flush compresses the
  topic's new bytes once per coding there:

  - with fewer than ``SHARED_FROM`` streams (a user's own topic): one independent
    write, the same bytes for each;
  - from ``SHARED_FROM`` on: the topic's ``SharedCompressor``. Streams *in step*
    with it send its bytes; streams that joined since its last resynchronisation
    point (*joining*: they stand at a block boundary of their own) send the flush's
    independent write, made once for all of them, until a point. A flush starts a
    point (``resync``) when streams are joining and no stream is in step, or the
    segment has ``RESYNC_BYTES`` or is ``RESYNC_SECONDS`` old: a point loses the
    context, so joiners wait for one instead of forcing one per flush. Below
    ``SHARED_FROM // 2`` streams the shared compressor is dropped (its memory with
    it) and those in step leave it.
* Frames. A zstd frame never ends at the end of a write but the stream's last
  (``_compression.py``: some decoders refuse a frame that starts a write): an
  independent write leaves its frame open, and so does the shared segment; what
  a stream sends next that does not continue it starts with ``Coding.leave``
  (``CodedStream.open_frame``; deflate needs nothing).
* Leaving. A stream whose write is pending leaves its topic's sets for catch-up
  (``FanOut.catch_up``), and its group with them; its next own write leaves the
  frame its last one left open. Caught up, it joins again (joining).
* Heartbeats reach a topic's group through the group (``TopicCoding.write``):
  streams in step stay in step.
* The last write (``more_body`` false) ends what the stream has open (its own zstd
  frame, a shared one it was in step with), so decoders that check a stream's end
  (httpx's zstd) see a whole one.
* Figures: bytes before and after compression, per coding (``Metrics.compressed``:
  ``sse_fast_compression_input_bytes_total`` and ``..._output_...`` in ``/metrics``).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from .._asgi import Send
from .._compression import Coding, SharedCompressor, make_codings, negotiate
from .._core import send_each
from .._patterns import is_pattern
from ..settings import StreamSettings
from ..settings._checks import split_list

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._subscription import Subscription

__all__ = [
    "RESYNC_BYTES",
    "RESYNC_SECONDS",
    "SHARED_FROM",
    "CodedStream",
    "Compression",
    "Outcome",
    "TopicCoding",
    "TopicCodings",
]

#: a topic's streams of one coding from which it gets a shared compressor
SHARED_FROM = 8
#: a segment this long (uncompressed bytes) lets joining streams in at the next flush
#: (measured, benches/results/compression.md: a point every 64 KiB costs 3-13 % more
#: bytes than none, every 16 KiB 9-42 %, every 4 KiB 25-250 %)
RESYNC_BYTES = 64 * 1024
#: ... and one this old (seconds): a joiner waits at most this long on independent
#: writes (3-6x the shared bytes); at 10 events/s of 300 B a segment is then about
#: 15 KiB (about 10 % more than none; 1 s would give 3 KiB, about 30 %)
RESYNC_SECONDS = 5.0


class Compression:
    """The codings a hub offers (its own compressors) and which streams get one."""

    def __init__(self, streams: StreamSettings) -> None:
        self.mode = streams.compression
        #: a stream of one topic: its topic's compressor (``topic``), independent writes
        #: only (``event``) or a compressor of its own (``stream``)
        self.context = streams.compression_context
        #: by name, preferred first; empty when compression is off
        self.codings = (
            {} if self.mode == "off" else make_codings(split_list(streams.compression_codings))
        )

    @property
    def offered(self) -> bool:
        """Whether any stream may be compressed (responses then vary on Accept-Encoding)."""
        return bool(self.codings)

    def choose(
        self, accept_encoding: str | None, names: Sequence[str], mixes_private: bool = False
    ) -> Coding | None:
        """The coding of a new stream of ``names`` (topics and patterns) whose request
        sent ``accept_encoding``; None: identity. ``mixes_private``: one of its topics
        is private, or may be (a pattern, with private topics configured)."""
        if not self.codings:
            return None
        if not one_topic(names) and (self.mode != "all" or mixes_private):
            return None
        return negotiate(accept_encoding, self.codings)

    def stream(
        self, send: Send, coding: Coding, names: Sequence[str], metrics: Metrics
    ) -> CodedStream:
        """The compressing ``send`` of a new stream of ``names`` (``choose`` gave ``coding``)."""
        context = self.context
        own = context == "stream" or not one_topic(names)
        return CodedStream(send, coding, own, metrics, shares=context == "topic")


def one_topic(names: Sequence[str]) -> bool:
    """Whether a stream of ``names`` is of one named topic (not a pattern)."""
    return len(names) == 1 and not is_pattern(names[0])


class CodedStream:
    """A compressed stream's ``send``: compresses each write made for this stream alone
    (see the module), then hands it to the server's ``send``."""

    __slots__ = ("coding", "group", "header", "metrics", "open_frame", "own", "send", "shares")

    def __init__(
        self, send: Send, coding: Coding, own: bool, metrics: Metrics, shares: bool = True
    ) -> None:
        self.send = send
        #: in its topic's group, may it share the topic's compressor (``topic`` context)
        self.shares = shares
        self.coding = coding
        #: what the first write starts with (the coding's header)
        self.header = coding.header
        #: a compressor of its own (streams of several topics), or None (independent writes)
        self.own = coding.private(header=False) if own else None
        #: its last write left a zstd frame open (an independent write, its topic's shared
        #: segment): what it sends next starts with ``Coding.leave``. Always true in a group.
        self.open_frame = False
        #: the topic's group it is in while in sync (``TopicCoding``), or None
        self.group: TopicCoding | None = None
        self.metrics = metrics

    def mode(self, subscription: Subscription) -> str:
        """What its bytes are now (``/stats``): ``own`` (a compressor of its own),
        ``shared`` (in step with its topic's compressor) or ``independent``."""
        if self.own is not None:
            return "own"
        group = self.group
        return "shared" if group is not None and subscription in group.in_step else "independent"

    def __call__(self, message: MutableMapping[str, Any]) -> Awaitable[Any]:
        data: bytes = message.get("body", b"")
        return self.send({**message, "body": self.encode(data, not message.get("more_body"))})

    def encode(self, data: bytes, last: bool = False) -> bytes:
        """``data`` compressed for this stream alone (``last``: nothing follows)."""
        if not data and not last:
            return b""  # nothing to say: a frame left open stays open
        coding = self.coding
        head = self.header
        if head:
            self.header = b""
        if self.open_frame:
            head += coding.leave()
            self.open_frame = False
        own = self.own
        if own is not None:
            out = own.write(data) if data else b""
            if last:
                out += own.end()
                self.own = None
        elif data:
            out = coding.independent(data)
            if last:
                out += coding.leave()
            else:
                self.open_frame = True
        else:
            out = b""
        self.metrics.compressed(coding.name, len(data), len(head) + len(out))
        return head + out if head else out


#: what a group's write hands back: events delivered, writes pending, streams gone
Outcome = tuple[int, list[tuple["Subscription", Any]], list["Subscription"]]


class TopicCoding:
    """A topic's streams of one coding in sync with it, and its shared compressor."""

    __slots__ = ("began", "coding", "in_step", "joining", "metrics", "shared", "shared_from")

    def __init__(self, coding: Coding, metrics: Metrics, shares: bool = True) -> None:
        self.coding = coding
        #: the streams from which it gets a shared compressor (never: independent writes)
        self.shared_from = SHARED_FROM if shares else sys.maxsize
        self.metrics = metrics
        #: in step with ``shared`` (they send its bytes as they are): the server's ``send``
        #: of each (``CodedStream.send``: the group writes compressed bytes itself)
        self.in_step: dict[Subscription, Send] = {}
        #: at a block boundary of their own: independent writes until a point
        self.joining: dict[Subscription, Send] = {}
        self.shared: SharedCompressor | None = None
        #: when the shared segment under way began (the clock's time)
        self.began = 0.0

    def __len__(self) -> int:
        return len(self.in_step) + len(self.joining)

    def join(self, subscription: Subscription, stream: CodedStream) -> None:
        """``subscription`` is in sync with the topic: it joins (at the next point)."""
        stream.group = self
        self.joining[subscription] = stream.send

    def leave(self, subscription: Subscription) -> None:
        """``subscription`` is no longer in sync (it may not have been in the group)."""
        send = self.in_step.pop(subscription, None) or self.joining.pop(subscription, None)
        if send is not None:
            coded = subscription.coded
            if coded is not None:
                coded.group = None
            if not self.in_step and not self.joining:
                self.shared = None  # its memory goes with the last stream

    def write(
        self, data: bytes, events: int, now: float, template: dict[str, Any], written: type
    ) -> Outcome:
        """Write ``data`` (``events`` events: what the topic's flush read, or a
        heartbeat) to every stream of the group, compressed once (see the module). A
        stream in a group always has a frame open (its opening, or the group's last
        write, left it so): what does not continue the shared segment starts with
        ``leave``."""
        coding = self.coding
        count = len(self)
        shared = self.shared
        messages: list[tuple[dict[Subscription, Send], bytes]] = []
        if shared is None and count >= self.shared_from:
            shared = self.shared = coding.shared()
        elif shared is not None and count < self.shared_from // 2:
            # too few for a compressor of their own: those in step leave its segment
            self.shared = shared = None
            self.joining = {**self.joining, **self.in_step}
            self.in_step = {}
        if shared is None:
            messages.append((self.joining, coding.leave() + coding.independent(data)))
            return self._send(messages, data, events, template, written)
        joining = self.joining
        resync = bool(joining) and (
            not self.in_step
            or shared.segment_bytes >= RESYNC_BYTES
            or now - self.began >= RESYNC_SECONDS
        )
        out = shared.write(data, resync)
        if out.resync:
            self.began = now
        if self.in_step:
            messages.append((self.in_step, out.whole))
        if joining:
            if out.resync:
                messages.append((joining, coding.leave() + out.body))
                self.in_step = {**self.in_step, **joining}  # new: messages hold the old
                self.joining = {}
            else:
                messages.append((joining, coding.leave() + coding.independent(data)))
        return self._send(messages, data, events, template, written)

    def _send(
        self,
        messages: list[tuple[dict[Subscription, Send], bytes]],
        data: bytes,
        events: int,
        template: dict[str, Any],
        written: type,
    ) -> Outcome:
        """Hand each set of streams its bytes, one message per set (the core's
        ``send_each``, as the flush writes identity streams)."""
        delivered = 0
        slow: list[tuple[Subscription, Any]] = []
        failed: list[Subscription] = []
        before = after = 0
        for streams, body in messages:
            if not streams:
                continue
            sent = send_each(streams, {**template, "body": body}, written, slow, failed)
            delivered += sent * events
            before += sent * len(data)
            after += sent * len(body)
        self.metrics.compressed(self.coding.name, before, after)
        return delivered, slow, failed


class TopicCodings:
    """A topic's compressed streams in sync, by coding (``Topic.coded``); iterating
    gives the streams (``Topic.members``)."""

    __slots__ = ("groups",)

    def __init__(self) -> None:
        self.groups: dict[str, TopicCoding] = {}

    def __iter__(self) -> Iterator[Subscription]:
        for group in self.groups.values():
            yield from group.in_step
            yield from group.joining

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def join(self, subscription: Subscription, stream: CodedStream) -> None:
        """``subscription`` (its writes ``stream``) is in sync with the topic."""
        assert not stream.header, "a stream joins its topic after its opening"
        coding = stream.coding
        group = self.groups.get(coding.name)
        if group is None:
            group = self.groups[coding.name] = TopicCoding(coding, stream.metrics, stream.shares)
        group.join(subscription, stream)

    def write(
        self,
        data: bytes,
        events: int,
        now: float,
        template: dict[str, Any],
        written: type,
        add: Callable[[Outcome], None],
    ) -> None:
        """Each group's write (``TopicCoding.write``), its outcome given to ``add``."""
        for group in list(self.groups.values()):
            if len(group):
                add(group.write(data, events, now, template, written))
