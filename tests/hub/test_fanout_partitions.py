"""The fan-out over several partitions (issue 42): each frame written to a stream
whose topics span partitions carries that stream's cursor as its id, in sync,
catching up and after a break; a break of one partition reaches its streams
only. A real ``Hub`` driven by a fake two-partition broker, no Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from sse_fast.hub import Hub, PublishRequest
from sse_fast.hub._cursor import parse_cursor
from sse_fast.settings import Settings

from ..support.asgi_harness import run, settle
from ..support.partitioned import PartitionedBroker, Reader, open_reader

WHERE = {"a": 0, "a2": 0, "b": 1, "b2": 1}


def two_partitions(**settings: Any) -> tuple[Hub, PartitionedBroker]:
    broker = PartitionedBroker(WHERE)
    return Hub(Settings(**settings), broker=broker), broker


def send(hub: Hub, topic: str, data: str) -> None:
    hub.publish_nowait([PublishRequest((topic,), data)])


class SlowReader(Reader):
    """A client that stops reading while ``paused``: its writes stay pending."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.pending: list[tuple[asyncio.Future[None], MutableMapping[str, Any]]] = []

    def __call__(self, message: MutableMapping[str, Any]) -> Any:
        if not self.paused or message["type"] == "http.response.start":
            return super().__call__(message)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((future, message))
        return future

    def resume(self) -> None:
        self.paused = False
        for future, message in self.pending:
            super().__call__(message)
            future.set_result(None)
        self.pending.clear()


def ids(reader: Reader) -> list[dict[int, int] | None]:
    return [parse_cursor(e.id) for e in reader.events]


def test_a_stream_catching_up_over_two_partitions_gets_its_cursors() -> None:
    """Writes pending: the stream catches up from the rings (``read_since`` with its
    positions), then rejoins the in-sync merge; every id is its cursor after that
    event, nothing lost or repeated."""

    async def main() -> None:
        hub, _ = two_partitions()
        reader = SlowReader()
        subscription = await hub.attach(
            ["a", "b"], None, reader, asyncio.get_running_loop().create_future
        )
        reader.paused = True
        send(hub, "a", "a1")
        await settle()
        send(hub, "b", "b1")
        send(hub, "a", "a2")
        await settle()
        assert subscription.state == subscription.CATCHING_UP
        reader.resume()
        await settle()
        assert subscription.state == subscription.IN_SYNC
        send(hub, "b", "b2")
        await settle()
        assert reader.data() == ["a1", "b1", "a2", "b2"]
        assert ids(reader) == [
            {0: 1000, 1: 899},
            {0: 1000, 1: 900},
            {0: 1001, 1: 900},
            {0: 1001, 1: 901},
        ]

    run(main())


def test_streams_of_the_same_topics_at_other_positions_get_their_own_ids() -> None:
    """Two in-sync streams of "a" and "b" that started when partition 0 stood at
    different positions (an event of "a2" between): one merge, but each frame's id
    is each stream's own cursor."""

    async def main() -> None:
        hub, _ = two_partitions()
        early, _ = await open_reader(hub, ["a", "b"])
        send(hub, "a2", "elsewhere")  # partition 0 moves on; neither stream has "a2"
        late, _ = await open_reader(hub, ["a", "b"])
        send(hub, "b", "b1")
        await settle()
        assert early.data() == late.data() == ["b1"]
        assert ids(early) == [{0: 999, 1: 900}]
        assert ids(late) == [{0: 1000, 1: 900}]

    run(main())


def test_a_break_of_one_partition_is_said_to_its_streams_only() -> None:
    """``Member.rejoined(..., partition=1)``: the streams of "b" get the
    ``sse-fast-missed`` (with ``partition``; a stream over both partitions with its
    cursor as the id), a stream of "a" nothing; an id from before the break then
    resumes as ``evicted``."""

    async def main() -> None:
        hub, broker = two_partitions()
        send(hub, "a", "a1")
        send(hub, "b", "b1")
        only_a, _ = await open_reader(hub, ["a"])
        only_b, _ = await open_reader(hub, ["b"])
        both, _ = await open_reader(hub, ["a", "b"])
        before = both.last_event_id
        broker.rejoin(1, 950, "redis-restarted")
        await settle()
        assert only_a.events == []
        (marker,) = only_b.events
        assert marker.event == "sse-fast-missed" and marker.id == "949"
        assert json.loads(marker.data) == {
            "reason": "redis-restarted",
            "last_event_id": None,
            "partition": 1,
        }
        (marker,) = both.events
        assert marker.event == "sse-fast-missed" and parse_cursor(marker.id) == {0: 1000, 1: 949}
        assert json.loads(marker.data)["partition"] == 1
        assert hub.last_position_of(1) == 949 and hub.last_position_of(0) == 1000
        send(hub, "b", "b2")
        await settle()
        assert parse_cursor(both.events[-1].id) == {0: 1000, 1: 950}
        again, _ = await open_reader(hub, ["a", "b"], before)
        assert again.headers["sse-fast-resume"] == "evicted"

    run(main())


def test_an_event_type_keeps_its_line_and_only_the_id_changes() -> None:
    """Frames from the local encoder put ``event:`` before ``id:``: the id line is
    replaced where it is; the frame's other bytes are the stored ones."""

    async def main() -> None:
        hub, _ = two_partitions()
        reader, _ = await open_reader(hub, ["a", "b"])
        hub.publish_nowait([PublishRequest(("a",), "x\ny", event="kind", id="mine", retry=5)])
        await settle()
        stored = hub.topics.by_name["a"].ring.read_since(0)[0]
        assert stored == b"event: kind\nid: mine\nretry: 5\ndata: x\ndata: y\n\n"
        written = b"event: kind\nid: ~899.0:101.1:0\nretry: 5\ndata: x\ndata: y\n\n"
        assert reader.raw.endswith(written)

    run(main())


def test_a_single_partition_stream_shares_the_stored_bytes() -> None:
    """No rewrite where the topics share one partition: the frame written is the
    one stored, publisher's id included."""

    async def main() -> None:
        hub, _ = two_partitions()
        reader, subscription = await open_reader(hub, ["a", "a2"])
        hub.publish_nowait([PublishRequest(("a",), "x", id="mine")])
        await settle()
        assert subscription.places is None
        assert reader.raw.endswith(b"id: mine\ndata: x\n\n")

    run(main())


def test_a_lost_history_marker_names_its_partition() -> None:
    """``Member.missed`` (a topic's history trimmed in Redis): the marker stands at
    its partition's position, names the partition, and on a stream over both
    partitions carries the cursor."""

    async def main() -> None:
        hub, _ = two_partitions()
        only_b, _ = await open_reader(hub, ["b"])
        both, _ = await open_reader(hub, ["a", "b"])
        hub.missed(["b"], 905, "redis-history-trimmed")
        await settle()
        (marker,) = only_b.events
        assert marker.id == "905" and json.loads(marker.data)["partition"] == 1
        (marker,) = both.events
        assert parse_cursor(marker.id) == {0: 999, 1: 905}
        assert json.loads(marker.data)["partition"] == 1

    run(main())


def test_stats_show_the_cursor_of_every_partition() -> None:
    """``/stats``' ``last_id``: with several partitions, a cursor over all of them."""

    async def main() -> None:
        hub, _ = two_partitions()
        send(hub, "b", "b1")
        assert parse_cursor(hub.stats()["last_id"]) == {0: 999, 1: 900}

    run(main())


def test_publish_latency_counts_the_events_of_every_partition() -> None:
    """An event of the partition whose positions run lower (B@900 after A@1000) is
    new in its partition: the publish latency counts it too."""

    async def main() -> None:
        hub, _ = two_partitions()
        await open_reader(hub, ["a", "b"])
        send(hub, "a", "a1")
        await settle()
        send(hub, "b", "b1")
        send(hub, "b", "b1")  # B@901
        await settle()
        assert hub.metrics.publish_latency.count == 3

    run(main())


def test_streams_at_one_cursor_part_when_one_catches_up() -> None:
    """In-sync streams at the same positions share them (one rewrite per flush);
    the one that falls behind and catches up moves its own, not the others'."""

    async def main() -> None:
        hub, _ = two_partitions()
        slow = SlowReader()
        await hub.attach(["a", "b"], None, slow, asyncio.get_running_loop().create_future)
        fast, _ = await open_reader(hub, ["a", "b"])
        send(hub, "a", "a1")
        await settle()
        slow.paused = True
        send(hub, "b", "b1")
        await settle()
        send(hub, "a", "a2")
        send(hub, "b", "b2")
        await settle()
        assert fast.data() == ["a1", "b1", "a2", "b2"] or fast.data() == ["a1", "b1", "b2", "a2"]
        assert ids(fast)[-1] == {0: 1001, 1: 901}
        slow.resume()
        await settle()
        assert sorted(slow.data()) == ["a1", "a2", "b1", "b2"]
        assert [d for d in slow.data() if d[0] == "b"] == ["b1", "b2"]
        assert ids(slow)[-1] == {0: 1001, 1: 901}
        for reader in (slow, fast):  # each id is the cursor after that event
            where = {"a1": (0, 1000), "a2": (0, 1001), "b1": (1, 900), "b2": (1, 901)}
            places = {0: 999, 1: 899}
            for event in reader.events:
                partition, position = where[event.data]
                places[partition] = position
                assert parse_cursor(event.id) == places
        send(hub, "b", "b3")
        await settle()
        assert ids(slow)[-1] == ids(fast)[-1] == {0: 1001, 1: 902}

    run(main())


def test_a_stream_catching_up_does_not_move_the_cursor_it_shared() -> None:
    """The catching-up stream reads a2 and b2 from the rings before the flush writes
    them to the in-sync one, with which it shared its positions: the in-sync one's
    ids stay its own (b2 is written first, at partition 0's 1000, not 1001)."""

    async def main() -> None:
        hub, _ = two_partitions(catch_up_timeout=0)
        slow = SlowReader()
        await hub.attach(["a", "b"], None, slow, asyncio.get_running_loop().create_future)
        fast, _ = await open_reader(hub, ["a", "b"])
        send(hub, "a", "a1")
        await settle()
        slow.paused = True
        send(hub, "b", "b1")
        await settle()  # the slow stream is catching up, at the positions both had
        slow.resume()  # its catch-up goes on before the next flush
        send(hub, "a", "a2")
        send(hub, "b", "b2")
        await settle()
        for reader in (slow, fast):  # each id is the cursor after that event
            where = {"a1": (0, 1000), "a2": (0, 1001), "b1": (1, 900), "b2": (1, 901)}
            places = {0: 999, 1: 899}
            for event in reader.events:
                partition, position = where[event.data]
                places[partition] = position
                assert parse_cursor(event.id) == places, (reader is fast, event)

    run(main())


def span(hub: Hub, data: str, event_id: str | None = None) -> None:
    hub.publish_nowait([PublishRequest(("a", "b"), data, id=event_id)])


def test_an_event_spanning_partitions_is_written_once_in_one_flush() -> None:
    """Both copies of an event of "a" (partition 0) and "b" (partition 1) in one
    flush: one frame, and the cursor after it is past both copies."""

    async def main() -> None:
        hub, _ = two_partitions()
        reader, _ = await open_reader(hub, ["a", "b"])
        span(hub, "both")
        send(hub, "a", "after")
        await settle()
        assert reader.data() == ["both", "after"]
        assert ids(reader)[-1] == {0: 1001, 1: 900}

    run(main())


def test_an_event_spanning_partitions_is_written_once_in_either_order() -> None:
    """The copies delivered in two flushes, partition 1's first or partition 0's
    first: one frame each way, and the cursor moves past the second copy."""

    async def main(order: list[int]) -> None:
        hub, broker = two_partitions()
        reader, _ = await open_reader(hub, ["a", "b"])
        broker.hold = True
        span(hub, "both")
        broker.hold = False
        held, broker.held = broker.held, []
        for index in order:
            broker.deliver([held[index]])
            await settle()
        send(hub, "b", "after")
        await settle()
        assert reader.data() == ["both", "after"]
        assert ids(reader)[-1] == {0: 1000, 1: 901}

    for order in ([0, 1], [1, 0]):
        run(main(order))


def test_two_events_sharing_an_id_on_two_partitions_are_both_written() -> None:
    """One publisher id on an event of "a" and another of "b" (other data): two
    events, both written."""

    async def main() -> None:
        hub, _ = two_partitions()
        reader, _ = await open_reader(hub, ["a", "b"])
        hub.publish_nowait([PublishRequest(("a",), "one", id="same")])
        hub.publish_nowait([PublishRequest(("b",), "two", id="same")])
        await settle()
        assert sorted(reader.data()) == ["one", "two"]

    run(main())


def test_a_catching_up_stream_gets_an_event_spanning_partitions_once() -> None:
    """A slow stream reading from the rings (catch-up) writes the event once."""

    async def main() -> None:
        hub, _ = two_partitions()
        reader = SlowReader()
        subscription = await hub.attach(
            ["a", "b"], None, reader, asyncio.get_running_loop().create_future
        )
        reader.paused = True
        send(hub, "a", "a1")
        await settle()
        span(hub, "both")
        send(hub, "b", "b1")
        await settle()
        assert subscription.state == subscription.CATCHING_UP
        reader.resume()
        await settle()
        assert reader.data() == ["a1", "both", "b1"]

    run(main())
