"""Pattern streams: which open streams a topic belongs to by pattern, found once.

Theory of operation:

* A stream may name topic patterns (``user/42/*``; ``_patterns.py``: ``*`` any run of
  characters, ``?`` one) beside exact topics. It then holds every topic a pattern
  matches as if it had named it, once the topic has history: the ones that have
  some when it opens (``existing``) and each other one with its first events
  (``created``: the fan-out calls it once per topic, before it writes them). A
  topic without history (a named subscriber's, nothing published yet) is not
  held: it goes with its last named subscriber, and comes back with its first
  event. From then on a publish to a held topic costs what it costs for an
  exact subscriber: the fan-out walks a topic's own sets, never the patterns.
* A presence companion (``<topic>/presence``) is never matched: it is named.
* The patterns are indexed by their literal prefix (the characters before the first
  wildcard), grouped by its first segment (``user/`` for ``user/42/*``; "" for a
  prefix without a whole one, ``*`` or ``news-*``): a new topic looks under its own
  first segment and under "", one dict lookup each, then up each prefix length in
  use there among its own first characters, and globs only the patterns met. A topic
  under a segment no pattern starts with costs two lookups; otherwise the cost grows
  with the distinct prefix lengths and the patterns that share its prefix, not with
  the streams: streams of one pattern share one entry.
* The reverse question, the existing topics a pattern matches, is asked when a
  stream opens. Topic names are indexed by their first segments
  (``NAME_INDEX_DEPTH``: ``user/``, ``user/42/``, ...), built the first time a
  pattern stream opens (one pass over the topics) and kept up to date after: a
  new topic's name is noted with its first events and indexed with the others noted
  when a stream next asks (or past ``_PENDING`` of them), those dropped meanwhile
  left out; a server that never sees a pattern pays nothing for it. A pattern looks in the
  deepest whole-segment prefix of its literal prefix (``user/42/`` for
  ``user/42/*``, ``user/`` for ``user/4*``) and globs those names.
* Figures: pattern streams open, distinct patterns, topics joined by a pattern,
  and the time spent globbing the patterns that share a new topic's first segment
  (``/metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from .._companions import topic_of_companion
from .._patterns import is_pattern, literal_prefix, matches

if TYPE_CHECKING:
    from .._core import Topic
    from ._subscription import Subscription

__all__ = ["NAME_INDEX_DEPTH", "PatternStreams", "pattern_matches", "patterns_refused"]

#: how many leading segments the index of topic names goes down
NAME_INDEX_DEPTH = 3
#: new topics' names indexed together, not one by one on the publish path
_PENDING = 1024
#: no stream (shared: never written to)
_NONE: list[Subscription] = []


def patterns_refused(refusal: str | None, names: Sequence[str]) -> str | None:
    """Why the topic patterns among ``names`` cannot be served: the broker's
    ``refusal`` (``Broker.patterns_refusal``; None: it serves them) when there are
    patterns, else None."""
    if refusal is None or not any(is_pattern(name) for name in names):
        return None
    return refusal


def pattern_matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether subscription ``patterns`` take topic ``name``: the one matcher
    (``_patterns.matches``), and never a presence companion."""
    return matches(name, patterns) and topic_of_companion(name) is None


class PatternStreams:
    """The open streams that name patterns, indexed by their patterns' prefixes."""

    def __init__(self) -> None:
        # literal prefix -> pattern -> the streams naming it (dicts as ordered sets)
        self._by_prefix: dict[str, dict[str, dict[Subscription, None]]] = {}
        # the first segment of a prefix ("" when it has no whole one) -> prefix length
        # -> how many distinct patterns have such a prefix
        self._heads: dict[str, dict[int, int]] = {}
        # segment prefix (up to NAME_INDEX_DEPTH segments) -> topic names; None until
        # the first pattern stream opens
        self._names: dict[str, dict[str, None]] | None = None
        # names of topics created since the index was last brought up to date: indexed
        # when a stream asks (``existing``), or past ``_PENDING`` of them, off the publish
        self._pending: list[str] = []
        self._table: Mapping[str, Topic] = {}  # the topics' table (``existing`` gives it)
        # patterns of streams being opened (a broker reads their topics meanwhile) -> how many
        self._opening: dict[str, int] = {}
        self.streams = 0  # pattern streams open
        self.joined_total = 0  # topics a stream joined by pattern after it opened
        self.match_seconds = 0.0  # time spent finding the streams of new topics

    @property
    def open_or_opening(self) -> int:
        """Pattern streams open, and patterns of streams being opened."""
        return self.streams + len(self._opening)

    @property
    def patterns(self) -> int:
        """Distinct patterns of the open streams."""
        return sum(len(by_pattern) for by_pattern in self._by_prefix.values())

    def figures(self) -> dict[str, float]:
        """This worker's figures for ``/metrics`` (``_catalogue.py``)."""
        return {
            "pattern_streams": self.streams,
            "patterns": self.patterns,
            "pattern_joins_total": self.joined_total,
            "pattern_match_seconds_total": round(self.match_seconds, 6),
        }

    def add(self, subscription: Subscription, patterns: Iterable[str]) -> None:
        """``subscription`` names ``patterns`` (distinct): index it under each."""
        self.streams += 1
        for pattern in patterns:
            prefix = literal_prefix(pattern)
            by_pattern = self._by_prefix.setdefault(prefix, {})
            streams = by_pattern.get(pattern)
            if streams is None:
                streams = by_pattern[pattern] = {}
                lengths = self._heads.setdefault(_head(prefix), {})
                lengths[len(prefix)] = lengths.get(len(prefix), 0) + 1
            streams[subscription] = None

    def opening(self, patterns: Sequence[str], more: int) -> None:
        """Streams of ``patterns`` are being opened (``more`` 1) or were opened or given up
        (-1): until then a topic they match is wanted (``wants``)."""
        opening = self._opening
        for pattern in patterns:
            left = opening.get(pattern, 0) + more
            if left > 0:
                opening[pattern] = left
            else:
                opening.pop(pattern, None)

    def wants(self, name: str, opening: bool = True) -> bool:
        """Whether an open (or, with ``opening``, an opening) stream's pattern matches topic
        ``name`` (a broker that holds only the topics its streams need prepares it:
        ``Member.wants``)."""
        if topic_of_companion(name) is not None:
            return False
        if opening and self._opening and matches(name, tuple(self._opening)):
            return True
        heads = self._heads
        if not heads:
            return False
        slash = name.find("/")
        found: dict[Subscription, None] = {}
        for lengths in (heads.get(name[: slash + 1]) if slash >= 0 else None, heads.get("")):
            if lengths is not None:
                self._glob(name, lengths, found)
        return bool(found)

    def remove(self, subscription: Subscription, patterns: Iterable[str]) -> None:
        """``subscription`` left: out of the index (a pattern no stream names goes)."""
        self.streams -= 1
        for pattern in patterns:
            prefix = literal_prefix(pattern)
            by_pattern = self._by_prefix.get(prefix)
            if by_pattern is None or pattern not in by_pattern:
                continue
            streams = by_pattern[pattern]
            streams.pop(subscription, None)
            if streams:
                continue
            del by_pattern[pattern]
            if not by_pattern:
                del self._by_prefix[prefix]
            head = _head(prefix)
            lengths = self._heads[head]
            left = lengths[len(prefix)] - 1
            if left:
                lengths[len(prefix)] = left
            else:
                del lengths[len(prefix)]
                if not lengths:
                    del self._heads[head]

    def _matching(
        self, name: str, under: dict[int, int] | None, bare: dict[int, int] | None
    ) -> list[Subscription]:
        """The open streams with a pattern that matches topic ``name`` (each once), of
        the prefix lengths in use under its first segment (``under``) and without a
        whole one (``bare``); timed (``match_seconds``)."""
        if topic_of_companion(name) is not None:
            return _NONE
        start = time.perf_counter()
        found: dict[Subscription, None] = {}
        if under is not None:
            self._glob(name, under, found)
        if bare is not None:
            self._glob(name, bare, found)
        self.match_seconds += time.perf_counter() - start
        return list(found)

    def _glob(self, name: str, lengths: dict[int, int], found: dict[Subscription, None]) -> None:
        """Add to ``found`` the streams of the patterns of prefix lengths ``lengths``
        (under one first segment) that match ``name``."""
        for length in lengths:
            if length > len(name):
                continue
            by_pattern = self._by_prefix.get(name[:length])
            if by_pattern is None:
                continue
            for pattern, streams in by_pattern.items():
                if matches(name, (pattern,)):  # a companion was ruled out by the caller
                    found.update(streams)

    def created(self, topic: Topic) -> list[Subscription]:
        """A topic's first events are about to be written (``FanOut.on_first``): its
        name indexed, and the streams whose patterns match it returned (the caller
        joins them to it). It runs for every new topic once a pattern stream opened:
        a topic under a first segment no pattern starts with costs two dict lookups."""
        name = topic.name
        if self._names is not None:
            pending = self._pending
            pending.append(name)
            if len(pending) > _PENDING:
                self._catch_up()
        heads = self._heads
        if not heads:
            return _NONE
        slash = name.find("/")
        under = heads.get(name[: slash + 1]) if slash >= 0 else None
        bare = heads.get("")  # prefixes without a whole segment (`*`, `news-*`)
        if under is None and bare is None:
            return _NONE
        found = self._matching(name, under, bare)
        self.joined_total += len(found)
        return found

    def unheld(self) -> list[Subscription]:
        """The open pattern streams that hold no topic yet (a break is said to them:
        ``_breaks.py``)."""
        found: dict[Subscription, None] = {}
        for by_pattern in self._by_prefix.values():
            for streams in by_pattern.values():
                found.update((s, None) for s in streams if not s.topics)
        return list(found)

    def dropped(self, name: str) -> None:
        """A topic was dropped (``Topics.drop``): out of the names' index."""
        if self._names is None:
            return
        for prefix in _segment_prefixes(name):
            names = self._names.get(prefix)
            if names is not None:
                names.pop(name, None)
                if not names:
                    del self._names[prefix]

    def _catch_up(self) -> None:
        """Index the names of the topics created since the last time that are still in
        the table (one dropped meanwhile is not: ``dropped`` did not find it)."""
        names = self._names
        assert names is not None
        table = self._table
        pending, self._pending = self._pending, []
        for name in pending:
            if name in table:
                _index(names, name)

    def existing(self, pattern: str, by_name: Mapping[str, Topic]) -> list[str]:
        """The names of the existing topics with history (``by_name``, the table's)
        that ``pattern`` matches, companions left out."""
        self._table = by_name
        if self._names is None:
            self._names = {}
            for name, topic in by_name.items():
                if topic.has_history:
                    _index(self._names, name)
        elif self._pending:
            self._catch_up()
        # the deepest segment prefix of its literal prefix that is indexed
        deepest = list(_segment_prefixes(literal_prefix(pattern)))
        candidates: Iterable[str] = (
            self._names.get(deepest[-1], ())
            if deepest
            else [name for name, topic in by_name.items() if topic.has_history]
        )
        return [name for name in candidates if pattern_matches(name, (pattern,))]


def _head(prefix: str) -> str:
    """A literal prefix's first segment, its slash included ("" without a whole one):
    a new topic looks only under its own first segment and under ""."""
    slash = prefix.find("/")
    return prefix[: slash + 1] if slash >= 0 else ""


def _segment_prefixes(name: str) -> Iterator[str]:
    """``name``'s prefixes that end a segment, up to ``NAME_INDEX_DEPTH`` of them."""
    at = -1
    for _ in range(NAME_INDEX_DEPTH):
        at = name.find("/", at + 1)
        if at < 0:
            return
        yield name[: at + 1]


def _index(names: dict[str, dict[str, None]], name: str) -> None:
    """Topic ``name`` in the names' index, under each of its segment prefixes (as
    ``_segment_prefixes`` gives them; a loop of its own: it runs for every new topic)."""
    at = name.find("/")
    depth = 0
    while at >= 0 and depth < NAME_INDEX_DEPTH:
        prefix = name[: at + 1]
        bucket = names.get(prefix)
        if bucket is None:
            names[prefix] = {name: None}
        else:
            bucket[name] = None
        depth += 1
        at = name.find("/", at + 1)
