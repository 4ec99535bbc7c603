"""The topics table (``TopicTable``, ``Topic``; Cython and its pure twin): storing
sequenced events, the hand-backs to the caller, and the flush's outcomes, checked
alone and the two implementations against each other (a Hypothesis property
drives both with the same operations)."""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_fast._core import Lagged

from ..conftest import PARITY_IMPLEMENTATIONS

#: each implementation loaded by name: the same code in both modes (tests/conftest.py)
pytestmark = pytest.mark.implementations_by_name

MODULES = {
    name: __import__(f"sse_fast._core.topic_{name}", fromlist=["x"])
    for name in PARITY_IMPLEMENTATIONS
}


class Item(NamedTuple):
    """A sequenced event, as the table reads it (the brokers' ``Sequenced``)."""

    position: int
    id: str
    topics: tuple[str, ...]
    frame: bytes
    accepted_at: float


class Done:
    """The result of a write done at once (the ``written_type``)."""


def table_of(
    module: ModuleType, max_frames: int = 4, max_bytes: int = 1000, budget: int = 10**9
) -> Any:
    """A table whose ``get`` makes topics and whose ``over_budget`` trims the topic
    written to longest ago by one frame at a time, recording what it did."""

    class Table(module.TopicTable):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__(max_frames, max_bytes, budget)
            self.calls: list[str] = []

        def get(self, name: str, now: float) -> Any:
            topic = self.by_name.get(name)
            if topic is None:
                topic = self.by_name[name] = module.Topic(name, 0, now)
                self.calls.append(f"new {name}")
            return topic

        def over_budget(self) -> None:
            self.calls.append("over budget")
            overhead = module.FRAME_OVERHEAD
            for oldest in list(self.by_write):
                while oldest.ring.nbytes and (
                    self.retained_bytes + overhead * self.retained_frames > self.history_budget
                ):
                    data = oldest.ring.nbytes
                    gone = oldest.trim(data - 1)
                    self.retained_bytes -= data - oldest.ring.nbytes
                    self.retained_frames -= gone
                    if oldest not in self.trimmed:
                        self.trimmed.append(oldest)

    return Table()


def frame(n: int) -> bytes:
    return b"data: %d\n\n" % n


def item(position: int, *names: str) -> Item:
    return Item(position, str(position), names, frame(position), 1.0)


@pytest.fixture(params=PARITY_IMPLEMENTATIONS)
def module(request: pytest.FixtureRequest) -> ModuleType:
    return MODULES[request.param]


def store_all(table: Any, items: list[Item], dirty: dict, accepted: list) -> list[tuple[int, Any]]:
    """Store everything, going on after each hand-back; the hand-backs."""
    handbacks = []
    start = 0
    while start < len(items):
        start, lagging = table.store(items, start, 2.0, dirty, accepted)
        if start < len(items) or lagging is not None:
            handbacks.append((start, None if lagging is None else lagging.name))
            table.trimmed.clear()
    return handbacks


def test_store_makes_rings_keeps_positions_and_skips_what_it_holds(module: ModuleType) -> None:
    table = table_of(module)
    dirty: dict = {}
    accepted: list = []
    items = [item(10, "a"), item(11, "a", "b"), item(11, "b"), item(9, "a")]
    assert table.store(items, 0, 2.0, dirty, accepted) == (4, None)
    a, b = table.by_name["a"], table.by_name["b"]
    assert table.calls == ["new a", "new b"] and list(dirty) == [a, b]
    assert list(a.positions) == [10, 11] and list(b.positions) == [11]
    assert a.has_history and a.published == 2 and b.published == 1
    assert table.with_history == 2 and table.last_position == 11
    assert table.retained_frames == 3 and table.retained_bytes == 3 * len(frame(10))
    assert accepted == [[1.0, 2]]  # positions 10 and 11 are new; 11 again and 9 are not
    assert list(table.by_write) == [a, b] and a.last_activity == 2.0
    assert a.ring.read_since(0) == (frame(10) + frame(11), 2)


def test_a_topic_without_history_shares_the_empty_ring(module: ModuleType) -> None:
    topic = module.Topic("x", 7, 1.5)
    assert topic.ring is module.NO_HISTORY and topic.positions == []
    assert not topic.has_history and topic.newest_position == 7
    assert topic.in_sync == {} and topic.in_sync is module.Topic("y", 0, 0).in_sync
    assert topic.lone is None and topic.lone_send is None and topic.last_activity == 1.5


def test_a_topic_keeps_the_partition_it_was_made_in(module: ModuleType) -> None:
    """Issue 42: a topic's partition is the broker's, given at creation (0 by default)."""
    assert module.Topic("x", 0, 0).partition == 0
    topic = module.Topic("x", 0, 0, 17)
    assert topic.partition == 17
    topic.partition = 3  # a plain attribute in both twins, as the pyi says
    assert topic.partition == 3


def test_eviction_under_a_catching_up_stream_is_handed_back(module: ModuleType) -> None:
    table = table_of(module, max_frames=2)
    dirty: dict = {}
    table.store([item(1, "a"), item(2, "a")], 0, 2.0, dirty, [])
    a = table.by_name["a"]
    a.join_catching_up("late stream")
    items = [item(3, "a", "b"), item(4, "b")]
    index, lagging = table.store(items, 0, 2.0, dirty, [])
    assert (index, lagging) == (0, a)  # the first item evicted position 1 of a
    assert a.evicted_up_to == 1 and list(a.positions) == [2, 3]
    # going on from there: a already holds 3, b gets it and 4
    assert table.store(items, index, 2.0, dirty, []) == (2, None)
    assert list(table.by_name["b"].positions) == [3, 4] and list(a.positions) == [2, 3]
    assert table.last_position == 4 and table.retained_frames == 4


def test_over_the_budget_the_subclass_trims_and_the_store_hands_back(module: ModuleType) -> None:
    per_frame = len(frame(1)) + module.FRAME_OVERHEAD
    table = table_of(module, budget=3 * per_frame)
    dirty: dict = {}
    items = [item(1, "a"), item(2, "b"), item(3, "c"), item(4, "c")]
    assert store_all(table, items, dirty, []) == [(3, None)]
    assert table.calls[-1] == "over budget"
    assert table.by_name["a"].evicted_up_to == 1 and len(table.by_name["a"].ring) == 0
    assert table.retained_frames == 3


def test_an_error_keeps_what_was_stored(module: ModuleType) -> None:
    table = table_of(module, max_bytes=20)
    items = [item(1, "a"), Item(2, "2", ("a",), b"x" * 21, 1.0), item(3, "a")]
    with pytest.raises(ValueError, match="exceeds the ring's max_bytes"):
        table.store(items, 0, 2.0, {}, [])
    assert table.last_position == 2 and list(table.by_name["a"].positions) == [1]


def test_flush_writes_each_topic_once_to_its_in_sync_streams(module: ModuleType) -> None:
    table = table_of(module)
    dirty: dict = {}
    got: dict[str, list] = {"lone": [], "second": [], "slow": []}

    def writer(name: str, result: Any) -> Any:
        def send(message: dict) -> Any:
            got[name].append(message)
            return result

        return send

    def broken(message: dict) -> Any:
        raise OSError("gone")

    table.store([item(1, "a")], 0, 2.0, dirty, [])
    a = table.by_name["a"]
    a.join_in_sync("lone", writer("lone", Done()))
    a.join_in_sync("second", writer("second", Done()))
    a.join_in_sync("slow", writer("slow", "pending"))
    a.join_in_sync("broken", broken)
    a.join_multi("multi", writer("lone", Done()))
    table.store([item(2, "a"), item(3, "a")], 0, 2.0, dirty, [])
    template = {"type": "http.response.body", "body": b"", "more_body": True}
    delivered, slow, failed, lagged, multi = table.flush(dirty, Done, template)
    body = frame(1) + frame(2) + frame(3)
    assert got["lone"] == got["second"] == got["slow"] == [{**template, "body": body}]
    assert got["lone"][0] is got["second"][0] and template["body"] == b""
    assert delivered == 3 * 3  # lone, second, slow; not the broken one
    assert slow == [("slow", "pending")] and failed == ["broken"] and lagged == []
    assert multi == {a: 0} and a.flushed == 3
    assert table.flush({a: None}, Done, template)[0] == 0  # nothing new: nothing written
    assert got["lone"] == [{**template, "body": body}]


def test_flush_of_more_than_the_ring_holds_reports_the_loss(module: ModuleType) -> None:
    table = table_of(module, max_frames=2)
    dirty: dict = {}
    table.store([item(n, "a") for n in (1, 2, 3)], 0, 2.0, dirty, [])
    a = table.by_name["a"]
    a.join_in_sync("s", lambda message: Done())
    assert table.flush(dirty, Done, {}) == (0, [], [], [(a, 1)], None)
    assert a.flushed == 3 == a.ring.head


def test_the_sets_and_the_lone_stream(module: ModuleType) -> None:
    topic = module.Topic("t", 0, 0.0)
    topic.join_in_sync("first", print)
    topic.join_in_sync("second", repr)
    topic.join_multi("multi", str)
    topic.join_catching_up("late")
    assert topic.in_sync_members() == ["first", "second"]
    assert list(topic.members()) == ["first", "second", "multi", "late"]
    topic.leave_in_sync("first")
    assert topic.lone is None and topic.lone_send is None and topic.in_sync == {"second": repr}
    topic.leave_in_sync("nobody")
    assert topic.in_sync_members() == ["second"]


def test_positions_and_cursors(module: ModuleType) -> None:
    table = table_of(module, max_frames=3)
    table.store([item(p, "a") for p in (5, 8, 9, 12)], 0, 2.0, {}, [])
    a = table.by_name["a"]
    assert a.evicted_up_to == 5 and a.newest_position == 12
    assert [a.position_at(c) for c in (2, 3, 4)] == [8, 9, 12]
    assert [a.cursor_after(p) for p in (5, 8, 10, 12, 20)] == [1, 2, 3, 4, 4]
    assert a.trim(0) == 3 and a.evicted_up_to == 12 and a.newest_position == 12


def test_the_base_table_leaves_get_and_the_budget_to_the_subclass(module: ModuleType) -> None:
    table = module.TopicTable(4, 100, 1)
    with pytest.raises(NotImplementedError):
        table.get("a", 0.0)
    with pytest.raises(NotImplementedError):
        table.store([item(1, "a")], 0, 0.0, {}, [])
    topic = module.Topic("a", 0, 0.0)
    with pytest.raises(NotImplementedError):  # over the budget of 1 byte
        table.keep(topic, frame(1), "1", 1)
    assert topic.positions[-1] == 1  # stored before the budget was looked at


# -- both implementations, the same operations ---------------------------------------

_operation = st.one_of(
    st.tuples(
        st.just("store"),
        st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True),
        st.integers(0, 3),
    ),
    st.tuples(
        st.just("join"), st.sampled_from("abc"), st.sampled_from(["done", "pending", "raises"])
    ),
    st.tuples(st.just("catch up"), st.sampled_from("abc"), st.none()),
    st.tuples(st.just("flush"), st.none(), st.none()),
)


def _run(module: ModuleType, operations: list[tuple[Any, Any, Any]]) -> list[Any]:
    table = table_of(module, max_frames=3, max_bytes=40, budget=4 * (10 + module.FRAME_OVERHEAD))
    dirty: dict = {}
    accepted: list = []
    position = 0
    log: list[Any] = []
    results = {"done": Done(), "pending": "pending"}

    def raises(message: dict) -> Any:
        raise OSError("gone")

    for number, (kind, what, extra) in enumerate(operations):
        if kind == "store":
            items = []
            for _ in range(extra + 1):
                position += 1
                event_id = (str(position), f"0{position}", f"id-{position}")[position % 3]
                items.append(
                    Item(
                        position,
                        event_id,
                        tuple(what),
                        b"x" * (position % 7 + 3),
                        float(number),
                    )
                )
            log.append(("store", store_all(table, items, dirty, accepted)))
        elif kind == "join":
            topic = table.get(what, 0.0)
            send = raises if extra == "raises" else (lambda m, r=results[extra]: r)
            topic.join_in_sync(f"s{number}", send)
        elif kind == "catch up":
            table.get(what, 0.0).join_catching_up(f"c{number}")
        else:
            try:
                delivered, slow, failed, lagged, multi = table.flush(dirty, Done, {"body": b""})
            except Lagged:  # pragma: no cover - the flush reports it, never raises it
                raise
            log.append(("flush", delivered, slow, failed, [(t.name, n) for t, n in lagged], multi))
            dirty.clear()
    for name, topic in sorted(table.by_name.items()):
        log.append(
            (
                name,
                [topic.ring.resume(f"{p}") for p in topic.positions],
                [topic.ring.resume(f"0{p}") for p in topic.positions],
                list(topic.positions),
                topic.evicted_up_to,
                topic.flushed,
                topic.published,
                len(topic.ring),
                topic.ring.nbytes,
            )
        )
    log.append(
        (
            table.retained_bytes,
            table.retained_frames,
            table.with_history,
            table.last_position,
            accepted,
            table.calls,
        )
    )
    return log


@pytest.mark.skipif(len(MODULES) < 2, reason="the extension is not built")
@settings(max_examples=300, deadline=None)
@given(st.lists(_operation, max_size=25))
def test_both_implementations_do_the_same(operations: list[tuple[Any, Any, Any]]) -> None:
    assert _run(MODULES["ext"], operations) == _run(MODULES["py"], operations)


def test_positions_survive_growth_and_wrapping(module: ModuleType) -> None:
    """The positions' slots grow (8, 16, 32) while evictions move the oldest along: every
    retained frame keeps its own position."""
    table = table_of(module, max_frames=20)
    a = None
    for n in range(1, 61):
        table.store([item(3 * n, "a")], 0, 2.0, {}, [])
        a = table.by_name["a"]
        if n in (7, 8, 9, 20, 21, 33, 60):
            retained = list(range(3 * max(1, n - 19), 3 * n + 1, 3))
            assert a.positions == retained, n
            assert [a.position_at(c) for c in range(a.ring.oldest, a.ring.head + 1)] == retained
            assert a.evicted_up_to == (3 * (n - 20) if n > 20 else 0)
    assert a is not None and a.newest_position == 180
    with pytest.raises(IndexError):
        a.position_at(a.ring.oldest - 1)
    with pytest.raises(IndexError):
        a.position_at(a.ring.head + 1)
    with pytest.raises(IndexError):
        a.forget_oldest(21)
    a.forget_oldest(20)
    assert a.positions == [] and a.newest_position == a.evicted_up_to == 180


@pytest.mark.parametrize(
    ("event_id", "position", "indexed"),
    [
        ("5", 5, False),  # the sequencer's own id: found by position, not indexed
        ("1795000000000000", 1795000000000000, False),
        ("0", 0, False),
        ("05", 5, True),  # not str(position): the publisher's
        ("6", 5, True),
        ("note-5", 5, True),
        ("5 ", 5, True),
        ("\u0665", 5, True),  # an Arabic-Indic five is not a decimal position id
        ("9" * 19, 9, True),
    ],
)
def test_only_the_publishers_ids_are_indexed(
    module: ModuleType, event_id: str, position: int, indexed: bool
) -> None:
    table = table_of(module)
    table.store([Item(position, event_id, ("a",), frame(position), 1.0)], 0, 2.0, {}, [])
    ring = table.by_name["a"].ring
    assert (ring.resume(event_id) == ring.head) is indexed


def test_the_floor_only_rises_and_only_through_the_topic(module: ModuleType) -> None:
    """The floor (``evicted_up_to``: what a resume can no longer be vouched for) has one
    owner, the topic: ``raise_floor`` (a broker's floor, a break's marker) never lowers
    it, eviction raises it past what it forgot, and nobody assigns it."""
    table = table_of(module, max_frames=3)
    table.store([item(p, "a") for p in (5, 8, 9, 12)], 0, 2.0, {}, [])
    a = table.by_name["a"]
    assert a.evicted_up_to == 5
    a.raise_floor(3)  # below: unchanged
    assert a.evicted_up_to == 5
    a.raise_floor(7)
    assert a.evicted_up_to == 7 and a.newest_position == 12
    a.forget_oldest(1)  # 8 forgotten: past it
    assert a.evicted_up_to == 8
    with pytest.raises(AttributeError):
        a.evicted_up_to = 0
    assert a.evicted_up_to == 8


def test_send_each_hands_one_message_to_every_target(module: ModuleType) -> None:
    """The loop of compressed groups and heartbeats: each ``send`` called with the one
    message; a pending result goes to ``slow``, a ``send`` that raises to ``failed``."""
    message = {"type": "http.response.body", "body": b"x", "more_body": True}
    got: list[Any] = []
    pending = object()

    def gone(m: Any) -> Any:
        raise RuntimeError("client gone")

    targets: dict[str, Any] = {
        "a": lambda m: got.append(m) or Done(),
        "b": lambda m: pending,
        "c": gone,
        "d": lambda m: got.append(m) or Done(),
    }
    slow: list[Any] = []
    failed: list[Any] = []
    assert module.send_each(targets, message, Done, slow, failed) == 3
    assert got == [message, message] and got[0] is message
    assert slow == [("b", pending)] and failed == ["c"]
