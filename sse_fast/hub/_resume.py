"""Resume: a ``Last-Event-ID`` becomes a position in each topic, or an honest
``unknown`` / ``evicted``, and a new stream's first bytes (``starting_point``).

The id is resolved to a position: an id found in the subscription's rings
gives that frame's position (one id at two positions, a publisher's id given to
two events of the stream's topics, is ``unknown``: a guess could skip events;
the ``sse-fast-missed`` says ``ambiguous``); a number within the positions this member
may claim (from its broker's ``first_position`` - 1 to the newest position it
applied) is a position. Each topic then resumes just after its last frame at
or before it (``resumed``). An id that resolves to nothing is ``unknown``; one
older than a frame some topic already evicted, among the positions a crash
may have lost (``Broker.lost``), or found in a ring but older
than the positions this member may claim (after a broker's history break), is
``evicted``. Both are reported (the ``SSE-Fast-Resume`` response header, and
an ``sse-fast-missed`` event carrying the current position as its id) and the
stream continues from now. "Resumed" is a promise: it is said only when every event after the id is
still in the rings.

Topic patterns. A stream of patterns holds the topics they match
(``_matching.py``): the ones that exist when it opens, those created while
its client was away among them, resolve as named ones do. A topic that
matches and went meanwhile (dropped idle, or by the history budget, with
events after the id) is gone with those events: ``evicted``, and the
``sse-fast-missed`` names it (``topics``: name -> the newest position gone,
as for a named topic whose ring evicted past the id); topics forgotten by
name (past ``max_topics`` dropped ones) with positions after the id make it
``evicted`` too (``unnamed_topics``). Never a silent skip.

Over several partitions. A broker of several partitions (``Broker.partitions``)
numbers each one's events apart, so a stream whose topics span several resumes
from a cursor (``_cursor.py``: a position per partition), its ``id:`` on every
frame. Each component resolves in its partition as a number does above (that
partition's first and newest positions, its topics' rings); the outcome is all
or nothing: every one resumed is ``resumed`` (each topic just after its
partition's component), any evicted is ``evicted``. A partition of the stream
missing from the cursor (the client added a topic of another partition), a
partition beyond the broker's, a component that resolves to nothing, a
malformed cursor and a plain id are ``unknown``: a single number cannot place
the other partitions exactly, and placing them by time would be inexact, so
silent. Components of partitions the stream no longer covers are ignored.
A stream of topic patterns over several partitions (``PatternsOver``) has a cursor
with a rest (a cursor without one is ``unknown``): a partition it lists resolves as
above, the others from the rest. Topics it matches that went without trace after
the cursor, in any partition (``Expansion.gone_up_to_in``), or were dropped
(``Topics.forgotten_over``) make it ``evicted``, as with one sequence. The
broker's ``lost`` ranges apply to every partition's component (the brokers that
record them have one partition; a match elsewhere can only make it ``evicted``). A
stream whose topics all fall in one partition resolves exactly as above.

Nothing here registers the stream: ``Hub.attach`` makes it at the point found
here and it joins the hub in ``_streams.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .._control_frames import missed_frame
from .._core import encode
from ..protocol import Resume
from ._cursor import REST, format_cursor, parse_cursor
from ._topics import Topic, read_since

__all__ = [
    "EVICTED",
    "MISSED_TOPICS",
    "NONE",
    "RESUMED",
    "UNKNOWN",
    "Forgotten",
    "PatternsOver",
    "opening_frame",
    "resolve",
    "resolve_over",
    "starting_point",
    "starting_point_over",
]

#: the topics an ``evicted`` outcome's ``sse-fast-missed`` names at most
MISSED_TOPICS = 100
#: for a stream of topic patterns: the names of the topics they match that were
#: dropped with events after a position (name -> the newest), and whether topics
#: forgotten by name may have had some (``Topics.forgotten_by``)
Forgotten = Callable[[int], tuple[dict[str, int], bool]]

#: no ``Last-Event-ID`` was given: the stream starts now
NONE = Resume.NONE
#: every event after the id is still in the rings: the stream starts just after it
RESUMED = Resume.RESUMED
#: the id resolves to no position: the stream starts now, after an ``sse-fast-missed``
UNKNOWN = Resume.UNKNOWN
#: events after the id may be gone: the stream starts now, after an ``sse-fast-missed``
EVICTED = Resume.EVICTED


def resolve(
    topics: Sequence[Topic],
    last_event_id: str | None,
    first_position: int,
    last_position: int,
    lost: Sequence[tuple[int, int]] = (),
    forgotten: Forgotten | None = None,
) -> tuple[str, dict[Topic, int]]:
    """The resume outcome (``none``, ``resumed``, ``unknown``, ``evicted``) and a
    ring cursor per topic: where the stream starts. ``forgotten``: for a stream of
    topic patterns, the topics they match that were dropped with events after a
    position (see the module doc)."""
    status, cursors, _ = _resolve(
        topics, last_event_id, first_position, last_position, lost, forgotten
    )
    return status, cursors


def _resolve(
    topics: Sequence[Topic],
    last_event_id: str | None,
    first_position: int,
    last_position: int,
    lost: Sequence[tuple[int, int]],
    forgotten: Forgotten | None,
) -> tuple[str, dict[Topic, int], dict[str, Any]]:
    """``resolve``, and what an ``evicted`` outcome's ``sse-fast-missed`` names: the
    topics whose events after the id are gone (``topics``: name -> the newest
    position gone), and whether topics no longer named may have had some
    (``unnamed_topics``)."""
    heads = {topic: topic.ring.head for topic in topics}
    if not last_event_id:
        return NONE, heads, {}
    target: int | None = None
    for topic in topics:
        cursor = topic.ring.resume(last_event_id)
        if cursor is not None:
            found = topic.position_at(cursor)
            if target is not None and found != target:
                # a publisher's id given to two events of the stream's topics: which one
                # the client holds cannot be told, and a guess could skip events
                return UNKNOWN, heads, {"ambiguous": True}
            target = found
    if (
        target is None
        and last_event_id.isascii()
        and last_event_id.isdigit()
        and len(last_event_id) <= 20
    ):
        # the sequencer's own ids (a position) are not in the rings' indexes
        number = int(last_event_id)
        if first_position - 1 <= number <= last_position or any(
            _holds(topic, number) for topic in topics
        ):
            target = number
    if target is None:
        return UNKNOWN, heads, {}
    if target < first_position - 1:
        # in a ring, but from before a history break (``Hub.rejoined``)
        return EVICTED, heads, {}
    gone = {topic.name: topic.evicted_up_to for topic in topics if topic.evicted_up_to > target}
    unnamed = False
    if forgotten is not None:
        dropped, unnamed = forgotten(target)
        gone.update(dropped)
    if gone or unnamed:
        details: dict[str, Any] = {"topics": dict(sorted(gone.items())[:MISSED_TOPICS])}
        if unnamed:
            details["unnamed_topics"] = True
        return EVICTED, heads, details
    if any(first <= target <= last for first, last in lost):
        return EVICTED, heads, {}  # given to an event a crash lost (``Broker.lost``)
    return RESUMED, {topic: topic.cursor_after(target) for topic in topics}, {}


def _holds(topic: Topic, position: int) -> bool:
    """Whether ``topic`` retains the frame at ``position``."""
    cursor = topic.cursor_after(position)
    return cursor >= topic.ring.oldest and topic.position_at(cursor) == position


def _printable(text: str | None) -> str | None:
    # bytes that were not UTF-8 (lone surrogates, see app/_http.py) are shown as "?"
    return None if text is None else text.encode("utf-8", "replace").decode("utf-8")


def opening_frame(
    status: str,
    last_event_id: str | None,
    last_position: int,
    retry_ms: int,
    **details: Any,
) -> bytes:
    """The stream's first frame: ``retry`` and, unless resumed, the current
    position as its id; for ``unknown``/``evicted`` an ``sse-fast-missed`` event
    saying so (``details`` in its data). (A resumed stream's backlog follows it.)"""
    if status in (NONE, RESUMED):
        return encode(retry=retry_ms, id=None if status == RESUMED else str(last_position))
    return missed_frame(status, last_position, _printable(last_event_id), retry=retry_ms, **details)


def starting_point(
    topics: Sequence[Topic],
    last_event_id: str | None,
    first_position: int,
    last_position: int,
    lost: Sequence[tuple[int, int]],
    retry_ms: int,
    forgotten: Forgotten | None = None,
) -> tuple[str, dict[Topic, int], bytes]:
    """Where a new stream of ``topics`` starts: the resume outcome (``resolve``), its
    ring cursor per topic once its first bytes are written, and those bytes
    (``opening_frame`` and, when resumed, the backlog). The caller flushed what was
    pending: the cursors of a stream that did not resume are the flushed heads."""
    status, cursors, details = _resolve(
        topics, last_event_id, first_position, last_position, lost, forgotten
    )
    first = opening_frame(status, last_event_id, last_position, retry_ms, **details)
    if status == RESUMED:
        first += read_since(cursors)[0]  # the cursors move past the backlog
    return status, cursors, first


class PatternsOver(NamedTuple):
    """A stream of topic patterns over several partitions: where its cursor's rest
    starts (``_cursor.py``; every topic born in any partition at or below it is among its
    topics), per partition the position up to which a matching topic may have gone
    without trace (``Expansion``), and the dropped topics it matches (``Forgotten``,
    per partition: ``Topics.forgotten_over``)."""

    rest: int
    gone_up_to_in: Sequence[int]
    forgotten: Callable[[Callable[[int], int]], tuple[dict[str, int], bool]] | None = None


def resolve_over(
    topics: Sequence[Topic],
    last_event_id: str | None,
    firsts: Mapping[int, int],
    lasts: Mapping[int, int],
    partitions: int,
    lost: Sequence[tuple[int, int]] = (),
    patterns: PatternsOver | None = None,
) -> tuple[str, dict[Topic, int], dict[int, int]]:
    """``resolve`` for a stream whose topics span several partitions (see the module
    doc): the outcome, a ring cursor per topic, and the stream's position in each
    partition it covers (``firsts`` and ``lasts``: each partition's first and
    newest position, keyed by the partitions of ``topics``; ``partitions``: the
    broker's count); ``patterns`` for a stream of topic patterns (its cursor has a
    rest)."""
    status, cursors, places, _ = _resolve_over(
        topics, last_event_id, firsts, lasts, partitions, lost, patterns
    )
    return status, cursors, places


def _resolve_over(
    topics: Sequence[Topic],
    last_event_id: str | None,
    firsts: Mapping[int, int],
    lasts: Mapping[int, int],
    partitions: int,
    lost: Sequence[tuple[int, int]],
    patterns: PatternsOver | None,
) -> tuple[str, dict[Topic, int], dict[int, int], dict[str, Any]]:
    heads = {topic: topic.ring.head for topic in topics}
    now = dict(lasts)
    if patterns is not None:
        now[REST] = patterns.rest
    if not last_event_id:
        return NONE, heads, now, {}
    components = parse_cursor(last_event_id)
    if components is None or max(components) >= partitions:
        return UNKNOWN, heads, now, {}
    rest = components.pop(REST, None)
    if patterns is not None and rest is None:
        return UNKNOWN, heads, now, {}  # not a pattern stream's cursor: other partitions?

    def component(partition: int) -> int:
        found = components.get(partition, rest)
        assert found is not None
        return found

    if patterns is None and not lasts.keys() <= components.keys():
        return UNKNOWN, heads, now, {}
    evicted = False
    for partition, last in lasts.items():
        number = component(partition)
        first = firsts[partition]
        mine = [topic for topic in topics if topic.partition == partition]
        if partition in components and not (
            first - 1 <= number <= last or any(_holds(t, number) for t in mine)
        ):
            return UNKNOWN, heads, now, {}
        evicted = (
            evicted
            or number < first - 1  # in a ring, but from before a history break
            or any(topic.evicted_up_to > number for topic in mine)
            or any(low <= number <= high for low, high in lost)  # a crash may have lost it
        )
    details: dict[str, Any] = {}
    if patterns is not None:
        gone: dict[str, int] = {}
        unnamed = any(component(p) < up_to for p, up_to in enumerate(patterns.gone_up_to_in))
        if patterns.forgotten is not None:
            dropped, forgotten = patterns.forgotten(component)
            gone.update(dropped)
            unnamed = unnamed or forgotten
        if gone or unnamed:
            details["topics"] = dict(sorted(gone.items())[:MISSED_TOPICS])
            if unnamed:
                details["unnamed_topics"] = True
    if evicted or details:
        return EVICTED, heads, now, details
    places = {partition: component(partition) for partition in lasts}
    if patterns is not None:
        assert rest is not None
        places[REST] = max(patterns.rest, rest)
    return RESUMED, {t: t.cursor_after(places[t.partition]) for t in topics}, places, {}


def starting_point_over(
    topics: Sequence[Topic],
    last_event_id: str | None,
    firsts: Mapping[int, int],
    lasts: Mapping[int, int],
    partitions: int,
    lost: Sequence[tuple[int, int]],
    retry_ms: int,
    patterns: PatternsOver | None = None,
) -> tuple[str, dict[Topic, int], bytes, dict[int, int]]:
    """``starting_point`` for a stream whose topics span several partitions
    (``resolve_over``): also the stream's position in each partition once its
    first bytes are written, whose cursor is the id of those bytes."""
    status, cursors, places, details = _resolve_over(
        topics, last_event_id, firsts, lasts, partitions, lost, patterns
    )
    if status == RESUMED:
        return status, cursors, encode(retry=retry_ms) + read_since(cursors, places)[0], places
    cursor = format_cursor(places)
    if status == NONE:
        return status, cursors, encode(retry=retry_ms, id=cursor), places
    first = missed_frame(status, cursor, _printable(last_event_id), retry=retry_ms, **details)
    return status, cursors, first, places
