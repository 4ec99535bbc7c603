"""Retention: which segments a writer may delete, from each topic's tally.

A topic's *tally* (``records_py``'s module doc) counts its events so far and
keeps the wall-clock time of its newest; a sealed segment keeps, for each topic
with an event in it, the ordinal of that topic's newest event there. A segment
is *dead* when none of its events is still kept by a ring: each of its topics
has ``ring_frames`` newer events, or had no publish for ``topic_ttl`` seconds.
The writer deletes dead segments from the oldest on (``EventLog.delete_dead``),
and forgets a topic whose newest event went with one (``forget``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..._core import Tally, tally_topics

if TYPE_CHECKING:
    from ._reading import Segment
    from ._records import Event

__all__ = ["count_loaded", "dead", "forget"]


def count_loaded(
    by_segment: Iterable[tuple[Segment, list[Event]]], tallies: dict[str, Tally]
) -> None:
    """Tally the events a start read back, each segment's in it, and seal them."""
    for segment, events in by_segment:
        for event in events:
            tally_topics((event,), event.wall, tallies, segment.live, segment.first)
        segment.seal()


def dead(
    segment: Segment, tallies: dict[str, Tally], now: float, ring_frames: int, topic_ttl: float
) -> bool:
    """Whether no ring keeps any event of ``segment`` any more (see the module doc)."""
    cutoff = now - topic_ttl
    return all(
        ordinal <= tallies[name].count - ring_frames or tallies[name].wall < cutoff
        for name, ordinal in segment.topics.items()
    )


def forget(segment: Segment, tallies: dict[str, Tally]) -> None:
    """``segment`` was deleted: forget the topics whose newest event was in it."""
    for name, ordinal in segment.topics.items():
        tally = tallies.get(name)
        if tally is not None and tally.count == ordinal:  # its newest event went
            del tallies[name]
