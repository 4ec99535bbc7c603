"""Resume over several partitions (issue 42): a stream over topics of two
partitions carries a cursor as its id and resumes each partition exactly, all or
nothing; a stream of one partition keeps today's ids. A real ``Hub`` driven by a
fake two-partition broker (``tests/support/partitioned.py``), no Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sse_fast
from sse_fast.hub import Hub, PublishRequest
from sse_fast.hub._cursor import format_cursor, parse_cursor
from sse_fast.settings import Settings

from ..support.asgi_harness import run, settle
from ..support.partitioned import PartitionedBroker, Reader, open_reader

#: topic "a" in partition 0 (positions from 1000), "b" and "b2" in partition 1 (from 900)
WHERE = {"a": 0, "a2": 0, "b": 1, "b2": 1}


def two_partitions(**settings: object) -> tuple[Hub, PartitionedBroker]:
    broker = PartitionedBroker(WHERE)
    return Hub(Settings(**settings), broker=broker), broker  # type: ignore[arg-type]


def send(hub: Hub, topic: str, data: str, **kw: object) -> str:
    return hub.publish_nowait([PublishRequest((topic,), data, **kw)])[0]  # type: ignore[arg-type]


def positions(reader: Reader) -> list[dict[int, int]]:
    """Each event's id read back as a cursor (all of them must be one)."""
    found = [parse_cursor(e.id) for e in reader.events if e.id is not None]
    assert all(cursor is not None for cursor in found), [e.id for e in reader.events]
    return [cursor for cursor in found if cursor is not None]


def test_interleaved_partitions_resume_exactly() -> None:
    """The client gets A@1000 ("a1"), then B@900 ("b1"), then A@1001 ("a2") while
    B@901 ("b2") is still on its way; it leaves, b2, a3 (A@1002) and b3 (B@902)
    arrive, and it comes back with its last id.

    A scalar id fails both ways: ``Last-Event-ID: 1001`` (the newest it saw) would
    start "b" after 1001 and skip b2 and b3 (B@901, B@902); ``900`` (B's newest)
    would start "a" after 900 and repeat a1 and a2. The cursor places each
    partition on its own: no loss, no repeat, each partition in order."""

    async def main() -> None:
        hub, broker = two_partitions()
        first, subscription = await open_reader(hub, ["a", "b"])
        send(hub, "a", "a1")
        await settle()  # written before b1 (in one flush, the merge orders by position)
        send(hub, "b", "b1")
        await settle()
        broker.hold = True
        send(hub, "b", "b2")  # on its way
        broker.hold = False
        send(hub, "a", "a2")
        await settle()
        assert first.data() == ["a1", "b1", "a2"]
        last_id = first.last_event_id
        assert parse_cursor(last_id) == {0: 1001, 1: 900}
        hub.detach(subscription)
        broker.deliver_held()
        send(hub, "a", "a3")
        send(hub, "b", "b3")
        # what scalar ids would have done (the positions are the fake broker's)
        sent = {"a1": 1000, "b1": 900, "a2": 1001, "b2": 901, "a3": 1002, "b3": 902}
        missing = {"b2", "a3", "b3"}
        assert {name for name, p in sent.items() if p > 1001} != missing  # loses b2, b3
        assert {name for name, p in sent.items() if p > 900} != missing  # repeats a1, a2

        second, _ = await open_reader(hub, ["a", "b"], last_id)
        await settle()
        assert second.headers["sse-fast-resume"] == "resumed"
        assert sorted(second.data()) == ["a3", "b2", "b3"]
        assert [d for d in second.data() if d.startswith("b")] == ["b2", "b3"]
        assert positions(second)[-1] == {0: 1002, 1: 902}

    run(main())


def test_every_frame_of_a_stream_over_two_partitions_carries_its_cursor() -> None:
    """The opening frame's id is the cursor of each partition's newest position;
    each event's id is the cursor after it, the publisher's own id hidden."""

    async def main() -> None:
        hub, _ = two_partitions()
        send(hub, "a", "before")
        reader, _ = await open_reader(hub, ["a", "b"])
        send(hub, "b", "one", id="publisher-id", event="kind")
        send(hub, "a", "two")
        await settle()
        assert reader.raw.startswith(b"id: ~899.0:101.1:0\nretry: ")  # {0: 1000, 1: 899}
        assert positions(reader) == [{0: 1000, 1: 900}, {0: 1001, 1: 900}]
        assert b"publisher-id" not in reader.raw
        assert b"event: kind\nid: ~900.0:100.1:0\ndata: one\n\n" in reader.raw

    run(main())


def test_a_stream_of_one_partition_keeps_todays_ids() -> None:
    """Topics all in one partition: the opening id, the events' ids and a plain
    numeric Last-Event-ID are what they are with one sequence."""

    async def main() -> None:
        hub, _ = two_partitions()
        send(hub, "b", "zero")
        reader, _ = await open_reader(hub, ["b", "b2"])
        send(hub, "b", "one", id="mine")
        send(hub, "b2", "two")
        await settle()
        assert reader.raw.startswith(b"id: 900\nretry: ")
        assert [e.id for e in reader.events] == ["mine", "902"]
        again, _ = await open_reader(hub, ["b", "b2"], "900")
        await settle()
        assert again.headers["sse-fast-resume"] == "resumed"
        assert again.data() == ["one", "two"]

    run(main())


@pytest.mark.parametrize(
    ("last_event_id", "why"),
    [
        ("1000", "a plain number cannot place the other partition"),
        ("publisher-id", "a publisher's id, even one in a ring"),
        (format_cursor({0: 1000}), "partition 1 missing (a topic added)"),
        (format_cursor({0: 1000, 1: 900, 2: 5}), "partition 2 beyond the broker's two"),
        (format_cursor({0: 1000, 1: 5000}), "a position partition 1 never reached"),
        ("~1000.0:0.1:x", "malformed"),
    ],
)
def test_what_cannot_place_every_partition_is_unknown(last_event_id: str, why: str) -> None:
    async def main() -> None:
        hub, _ = two_partitions()
        send(hub, "a", "a1", id="publisher-id")
        send(hub, "b", "b1")
        reader, _ = await open_reader(hub, ["a", "b"], last_event_id)
        send(hub, "b", "b2")
        await settle()
        assert reader.headers["sse-fast-resume"] == "unknown", why
        missed = reader.events[0]
        assert missed.event == "sse-fast-missed"
        assert parse_cursor(missed.id) == {0: 1000, 1: 900}  # where the stream starts
        assert json.loads(missed.data)["last_event_id"] == last_event_id
        assert reader.data() == ["b2"]

    run(main())


def test_a_partition_past_its_ring_is_evicted_for_the_whole_stream() -> None:
    """All or nothing: partition 0 could resume, partition 1's ring lost what
    followed the cursor: ``evicted``, and the stream starts now."""

    async def main() -> None:
        hub, _ = two_partitions(ring_max_frames=2)
        send(hub, "a", "a1")
        send(hub, "b", "b1")
        cursor = format_cursor({0: 1000, 1: 900})
        for index in range(3):  # "b" holds 2: b1's successor b2 goes
            send(hub, "b", f"b{index + 2}")
        reader, _ = await open_reader(hub, ["a", "b"], cursor)
        await settle()
        assert reader.headers["sse-fast-resume"] == "evicted"
        assert reader.events[0].event == "sse-fast-missed"
        assert parse_cursor(reader.events[0].id) == {0: 1000, 1: 903}
        assert reader.data() == []

    run(main())


def test_positions_of_each_partition_are_kept_apart() -> None:
    """The hub's newest applied position per partition: B's lower positions do not
    hide behind A's (``Hub.last_position_of``)."""

    async def main() -> None:
        hub, _ = two_partitions()
        assert (hub.last_position_of(0), hub.last_position_of(1)) == (999, 899)
        send(hub, "a", "a1")
        send(hub, "b", "b1")
        assert (hub.last_position_of(0), hub.last_position_of(1)) == (1000, 900)
        assert hub.last_position == 1000  # the newest of any: a figure only

    run(main())


def test_only_topics_keeps_the_positions_of_partitions() -> None:
    """One owner (STYLE 14): the newest applied position of each partition, what a
    cursor's resume rests on, is named in ``hub/_topics.py`` alone (``Topics``
    raises it in ``applied`` and ``skip_to_in``); the rest ask ``last_position_of``."""
    package = Path(sse_fast.__file__).parent
    users = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "_partition_positions" in path.read_text()
    }
    assert users == {"hub/_topics.py"}


def test_a_resume_between_the_copies_of_a_spanning_event_skips_the_second() -> None:
    """A client that got the event from partition 0 (its cursor past that copy)
    but whose cursor for partition 1 is before the other copy resumes without
    it, and its cursor moves past it."""

    async def main() -> None:
        hub, _ = two_partitions()
        await open_reader(hub, ["a", "b"])
        hub.publish_nowait([PublishRequest(("a", "b"), "both")])
        hub.publish_nowait([PublishRequest(("b",), "after")])
        await settle()
        got_a = format_cursor({0: 1000, 1: 899})  # copy in 0 at 1000, in 1 at 900
        reader, _ = await open_reader(hub, ["a", "b"], got_a)
        await settle()
        assert reader.data() == ["after"]
        assert positions(reader)[-1] == {0: 1000, 1: 901}

    run(main())
