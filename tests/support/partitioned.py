"""A broker of several partitions in this process, and a stream reader, for the
hub's tests of issue 42 (a Redis fleet's partitions) without Redis.

``PartitionedBroker`` numbers each partition's events in a sequence of its own,
starting where the test says: by default partition 1 runs 100 positions below
partition 0, so positions interleave across partitions as two Redis masters'
clocks do. A test can hold deliveries (``hold``) and hand them over later in an
order of its choice (``deliver_held``), as events of different partitions arrive
in any order. ``Reader`` is an eager ASGI ``send`` that parses what it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import sse_fast
from sse_fast.brokers import Broker
from sse_fast.brokers._sequencing import Sequenced, sequence
from sse_fast.brokers.redis._partitions import partition_of
from sse_fast.hub import Hub, PublishRequest, Subscription

from .asgi_harness import PyEmptyAwaitable

__all__ = ["PartitionedBroker", "Reader", "open_reader"]


class PartitionedBroker(Broker):
    """A broker whose topics fall in ``len(starts)`` partitions: ``where`` names a
    topic's, else ``partition_of(name, partitions)`` (Redis's rule). Each partition
    has its own sequence from ``starts[p]``; an event spanning partitions is
    stored in each under one id (the publisher's, else ``x`` + 16 hex digits),
    one ``Sequenced`` per partition, as the Redis broker does."""

    def __init__(
        self, where: Mapping[str, int] | None = None, starts: Sequence[int] = (1000, 900)
    ) -> None:
        super().__init__()
        self.partitions = len(starts)
        self.where = dict(where or {})
        self.firsts = list(starts)
        self.first_position = starts[0]
        self.next = list(starts)
        #: while True, sequenced events wait in ``held`` instead of being delivered
        self.hold = False
        self.held: list[Sequenced] = []
        self.spanning = 0

    def partition_of(self, name: str) -> int:
        """The test's partition for ``name``, else Redis's rule."""
        found = self.where.get(name)
        return partition_of(name, self.partitions) if found is None else found

    def first_position_of(self, partition: int) -> int:
        """Where ``partition``'s sequence started."""
        return self.firsts[partition]

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """``publish_nowait``, awaitable."""
        return self.publish_nowait(requests, accepted_at)

    def publish_nowait(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """Sequence each request in its partition; deliver (or hold) them in order."""
        items = []
        answers = []
        for request in requests:
            partitions = sorted({self.partition_of(name) for name in request.topics})
            if len(partitions) > 1:  # as Redis: one copy per partition, one id
                self.spanning += 1
                request = request._replace(id=request.id or f"x{self.spanning:016x}")
            for partition in partitions:
                part = request._replace(
                    topics=tuple(t for t in request.topics if self.partition_of(t) == partition)
                )
                items += sequence([part], self.next[partition], accepted_at)
                self.next[partition] += 1
            answers.append(items[-1].id)
        if self.hold:
            self.held += items
        else:
            self.deliver(items)
        return answers

    def rejoin(self, partition: int, history_from: int, reason: str) -> None:
        """``partition``'s sequence goes on at ``history_from`` without the events
        before it (a Redis master replaced): the claims restart there, and the hub
        is told (``Member.rejoined``)."""
        self.firsts[partition] = self.next[partition] = history_from
        self.member.rejoined(history_from, reason, partition)

    def deliver_held(self, order: Sequence[int] | None = None) -> None:
        """Deliver the held events (in ``order``, indexes into ``held``; else as held)."""
        held, self.held = self.held, []
        for index in order if order is not None else range(len(held)):
            self.deliver([held[index]])


class Reader:
    """An eager ASGI ``send`` (a client that reads at once) that parses the stream."""

    def __init__(self) -> None:
        self.parser = sse_fast.Parser()
        self.events: list[Any] = []
        self.raw = bytearray()
        self.headers: dict[str, str] = {}

    def __call__(self, message: MutableMapping[str, Any]) -> PyEmptyAwaitable:
        if message["type"] == "http.response.start":
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            self.raw += message["body"]
            self.events += self.parser.feed(message["body"])
        return PyEmptyAwaitable()

    @property
    def last_event_id(self) -> str:
        """What a browser would send as ``Last-Event-ID`` now."""
        return str(self.parser.last_event_id)

    def data(self) -> list[str]:
        """The ``data`` of the events that are not ours (``sse-fast-*``)."""
        return [e.data for e in self.events if not (e.event or "").startswith("sse-fast-")]


async def open_reader(
    hub: Hub, names: list[str], last_event_id: str | None = None
) -> tuple[Reader, Subscription]:
    """A ``Reader`` attached to ``hub`` for ``names``, and its subscription."""
    reader = Reader()
    loop = asyncio.get_running_loop()
    subscription = await hub.attach(names, last_event_id, reader, loop.create_future)
    return reader, subscription
