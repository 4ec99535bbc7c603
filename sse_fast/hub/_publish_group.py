"""Publishing together: the small publishes of one turn of the event loop in one call.

With the data directory (``sse-fast serve``'s default) a ``POST /publish`` of one
event costs a write of its own, a sequencing call, a store and a flush. When
several small publishes are awaited in the same turn of the event loop (many
publishers at once), they are handed to the broker as one batch at the end of
that turn: one write, one sequencing, one store; each request gets its own ids.

What a publish promises is unchanged:

* its ids are answered once it is stored and delivered, as before; a publish
  whose request was cancelled before the group was published is not published;
* publishes keep the order they were awaited in: a larger publish (a batch, a
  publish stream's chunk: it has its own write already and does not wait), a
  ``publish_nowait`` and the hub's stop publish the waiting group first;
* each gets the answer it would have had alone: a group that cannot be
  published whole (an event that cannot be encoded, no room for new topics) is
  published again one publish at a time; a failed write fails each of them with
  its 503, nothing stored (each would have met the same disk); a fault that is
  not a refusal (a bug) fails each of them with it, and is not tried again.

Only publishes of up to ``GROUP_EVENTS`` events wait, and only with a broker
that writes per publish (``Broker.groups_publishes``: the local one with the
data directory). A publish to a topic with ``WIDE_FANOUT`` streams or more
does not wait either (it goes as a larger one does): a publish that waits is
answered a turn later, after the flush that hands its event to every stream,
and under Granian its answer then leaves behind those writes. A broadcast to
15,000 streams at 20 publishes/s (four publishers, each awaiting its answer)
delivered 0.80x of ``--persistence off`` so in an outside probe, about half
on this project's machine (``benches/results/persistence_saturation.md``);
such a fan-out costs far more than the write the publish could have shared.
One ``call_soon`` per turn, one future per waiting publish.
The accepted time of a group is its first publish's (the publish latency metric
then counts from the earliest of them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .._tasks import running_loop
from ..brokers import Broker
from ..publishing import PublishError, PublishRequest
from ._metrics import Metrics
from ._topics import Topics

__all__ = ["GROUP_EVENTS", "WIDE_FANOUT", "PublishGroup"]

#: publishes of up to this many events wait for their turn's group
GROUP_EVENTS = 16
#: unless one of their topics has this many streams or more (see the module doc)
WIDE_FANOUT = 64

_Waiting = tuple[list[PublishRequest], float, "asyncio.Future[list[str]]"]


class PublishGroup:
    """The group of small publishes awaited in this turn of the loop (see the module doc)."""

    def __init__(self, broker: Broker, metrics: Metrics, topics: Topics) -> None:
        self.broker = broker
        self.metrics = metrics  # publishes_grouped_total
        self.topics = topics  # room for new topics (when the broker stores every topic)
        self._waiting: list[_Waiting] = []

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """Publish ``requests`` through the broker, with the others of this turn when it is
        small and the broker groups; their ids (``PublishError`` as ``Broker.publish``)."""
        if len(requests) > GROUP_EVENTS or not self.broker.groups_publishes or self._wide(requests):
            self.publish_waiting()  # those awaited before this one go first
            return await self.broker.publish(requests, accepted_at)
        loop = running_loop()
        if not self._waiting:
            loop.call_soon(self.publish_waiting)
        future: asyncio.Future[list[str]] = loop.create_future()
        self._waiting.append((requests, accepted_at, future))
        return await future

    def _wide(self, requests: list[PublishRequest]) -> bool:
        """Whether a topic of ``requests`` has ``WIDE_FANOUT`` streams or more."""
        by_name = self.topics.by_name
        for request in requests:
            for name in request.topics:
                topic = by_name.get(name)
                if topic is not None and topic.subscribers >= WIDE_FANOUT:
                    return True
        return False

    def publish_waiting(self) -> None:
        """Publish the waiting group now (at the end of the turn, or before a publish that
        does not wait)."""
        waiting, self._waiting = self._waiting, []
        live = [entry for entry in waiting if not entry[2].done()]  # cancelled: not published
        if len(live) > 1:
            self._together(live)
        elif live:
            self._alone(live[0])

    def _together(self, live: list[_Waiting]) -> None:
        requests = [request for entry in live for request in entry[0]]
        try:
            self.check_room(requests)
            ids = self.broker.publish_nowait(requests, live[0][1])
        except PublishError as exc:
            if exc.reason == "storage":
                for _, _, future in live:  # the disk: each alone would have met it too
                    future.set_exception(_copy(exc))
                return
            # nothing was published (a refused publish is whole or nothing): each
            # publish again alone, in order, for its own answer
            for entry in live:
                self._alone(entry)
            return
        except Exception as exc:  # a fault, not a refusal: not tried again
            for _, _, future in live:
                future.set_exception(exc)
            return
        except BaseException:
            for _, _, future in live:
                future.cancel()
            raise
        self.metrics.publishes_grouped_total += len(live)
        start = 0
        for entry_requests, _, future in live:
            end = start + len(entry_requests)
            future.set_result(ids[start:end])
            start = end

    def check_room(self, requests: Sequence[PublishRequest]) -> None:
        """Refuse a publish that would give too many topics a history (``max_topics``) when
        the broker stores every topic here: the hub's check, and again for a group."""
        if self.broker.stores_every_topic:
            self.topics.check_room(requests)

    def _alone(self, entry: _Waiting) -> None:
        requests, accepted_at, future = entry
        try:
            self.check_room(requests)
            ids = self.broker.publish_nowait(requests, accepted_at)
        except Exception as exc:
            future.set_exception(exc)
            return
        except BaseException:
            future.cancel()
            raise
        future.set_result(ids)


def _copy(exc: PublishError) -> PublishError:
    """One exception object per waiting publish (each task adds its own traceback)."""
    return PublishError(str(exc), exc.status, exc.retry_after, exc.reason)
