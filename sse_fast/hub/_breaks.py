"""Breaks: where a broker lost events, the streams are told in their place.

A broker that rejoins its sequence without the events in between
(``Hub.rejoined``, the broker contract's "Breaks are said"), or that finds a
topic's history trimmed before it could read it (``Hub.missed``), makes the hub
store an ``sse-fast-missed`` marker at the position of the break, with that
position as its id: every open stream of those topics gets it among its events,
in order, and resuming from it is a resume from after the break. Ids from before
it resolve to ``evicted``: what followed them cannot be vouched for.

A stream of topic patterns that holds no topic yet gets the marker too,
written to it (``unheld``): what was lost may be of a topic it would have held.

Breaks are per partition (a broker of several, ``Broker.partitions``): a
rejoin of one partition marks the topics of that partition only, at a position
of its own sequence, and its ``data`` names the ``partition``. The streams of
other partitions' topics go on untouched; one over several partitions gets the
marker with its cursor as the id, like any of its frames (``_fanout.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .._control_frames import missed_frame
from ..brokers._sequencing import Sequenced
from ._fanout import FanOut
from ._subscription import Subscription

__all__ = ["mark_break", "mark_missed"]

log = logging.getLogger("sse_fast")


def mark_break(
    fanout: FanOut,
    history_from: int,
    reason: str | None,
    partition: int = 0,
    unheld: Sequence[Subscription] = (),
) -> None:
    """The broker joined ``partition``'s sequence at ``history_from``; on a break
    (``reason``), a marker just before it in every topic of that partition with
    subscribers, and written to ``unheld``: pattern streams in sync that hold no
    topic yet (the events lost may be of topics they would have held)."""
    fanout.flush_pending()
    topics = fanout.topics
    marker = history_from - 1
    if reason is None or marker <= topics.last_position_of(partition):
        if reason is not None:  # pragma: no cover - the brokers leave room for it
            log.error("history break at %d leaves no room for a marker", marker)
        topics.skip_to_in(partition, marker)
        return
    fanout.metrics.history_breaks_total += 1
    names = tuple(
        name
        for name, topic in topics.by_name.items()
        if topic.subscribers and topic.partition == partition
    )
    if topics.partitions == 1:
        frame = missed_frame(reason, marker)
    else:
        frame = missed_frame(reason, marker, partition=partition)
    if names:
        fanout.apply([Sequenced(marker, str(marker), names, frame, fanout.clock())])
    else:
        topics.skip_to_in(partition, marker)  # past the newest applied (checked above)
    targets = {s: s.send for s in unheld if s.in_sync_started}
    if targets:
        fanout.write_all(targets, {"type": "http.response.body", "body": frame, "more_body": True})


def mark_missed(fanout: FanOut, names: Sequence[str], position: int, reason: str) -> None:
    """A marker at ``position`` in ``names``: events were lost there."""
    fanout.metrics.history_breaks_total += 1
    topics = fanout.topics
    if topics.partitions == 1 or not names:
        frame = missed_frame(reason, position)
    else:  # the names' partition (a broker's break is in one partition)
        frame = missed_frame(reason, position, partition=topics.partition_of(names[0]))
    fanout.apply([Sequenced(position, str(position), tuple(names), frame, fanout.clock())])
    for name in names:  # what came before the marker can no longer be vouched for
        topic = fanout.topics.by_name.get(name)
        if topic is not None:
            topic.raise_floor(position - 1)
