"""Ring: unit tests and a Hypothesis state machine against a deque model."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from sse_fast import Lagged

from ..conftest import IMPLEMENTATIONS, load_implementation

#: each implementation loaded by name: the same code in both modes (tests/conftest.py)
pytestmark = pytest.mark.implementations_by_name


def test_publish_read_coalesced(impl: SimpleNamespace) -> None:
    ring = impl.Ring(max_frames=8, max_bytes=1000)
    cursor = ring.cursor()
    assert ring.read_since(cursor) == (b"", 0)
    seqs = [ring.publish(b"f%d\n\n" % i, str(i)) for i in range(3)]
    assert seqs == [1, 2, 3]
    data, cursor = ring.read_since(cursor)
    assert data == b"f0\n\nf1\n\nf2\n\n"
    assert cursor == 3
    assert ring.read_since(cursor) == (b"", 3)


def test_single_pending_frame_is_shared_not_copied(impl: SimpleNamespace) -> None:
    ring = impl.Ring()
    frame = b"data: " + b"x" * 1000 + b"\n\n"
    start = ring.cursor()
    ring.publish(frame)
    first, _ = ring.read_since(start)
    second, _ = ring.read_since(start)
    assert first is frame and second is frame


def test_eviction_by_count_and_lag(impl: SimpleNamespace) -> None:
    ring = impl.Ring(max_frames=3, max_bytes=10_000)
    for i in range(5):
        ring.publish(b"%d" % i)
    assert len(ring) == 3 and ring.oldest == 3 and ring.head == 5 and ring.evicted == 2
    with pytest.raises(Lagged) as info:
        ring.read_since(0)
    assert info.value.lost == 2
    with pytest.raises(Lagged):
        ring.read_frames(0)
    assert ring.read_frames(2) == [b"2", b"3", b"4"]
    assert ring.read_frames(5) == []
    assert info.value.oldest_cursor == 2
    assert ring.read_since(info.value.oldest_cursor) == (b"234", 5)
    with pytest.raises(Lagged) as info:
        ring.read_since(1)
    assert info.value.lost == 1


def test_eviction_by_bytes(impl: SimpleNamespace) -> None:
    ring = impl.Ring(max_frames=100, max_bytes=10)
    ring.publish(b"aaaa")
    ring.publish(b"bbbb")
    ring.publish(b"cccc")  # 12 bytes > 10: the oldest goes
    assert len(ring) == 2 and ring.nbytes == 8 and ring.evicted == 1
    assert ring.read_since(1) == (b"bbbbcccc", 3)


def test_frame_larger_than_ring_is_refused(impl: SimpleNamespace) -> None:
    ring = impl.Ring(max_frames=4, max_bytes=10)
    ring.publish(b"12345")
    with pytest.raises(ValueError, match="exceeds the ring's max_bytes"):
        ring.publish(b"x" * 11)
    assert ring.head == 1 and len(ring) == 1  # nothing lost, nothing stored


def test_resume(impl: SimpleNamespace) -> None:
    ring = impl.Ring(max_frames=3)
    ring.publish(b"a", "id-a")
    ring.publish(b"b", "id-b")
    ring.publish(b"c")
    assert ring.resume("id-a") == 1
    assert ring.read_since(ring.resume("id-a")) == (b"bc", 3)
    assert ring.resume("unknown") is None
    ring.publish(b"d", "id-d")  # evicts id-a
    assert ring.resume("id-a") is None
    assert ring.resume("id-b") == 2
    ring.publish(b"e", "id-b")  # a repeated id maps to the newest frame
    assert ring.resume("id-b") == 5
    ring.publish(b"f")
    ring.publish(b"g")  # evicts the first id-b (seq 2) and seq 3, 4... map keeps seq 5
    assert ring.resume("id-b") == 5


def test_bad_arguments(impl: SimpleNamespace) -> None:
    ring = impl.Ring()
    ring.publish(b"x")
    with pytest.raises(ValueError, match="outside"):
        ring.read_since(2)
    with pytest.raises(ValueError, match="outside"):
        ring.read_since(-1)
    with pytest.raises(TypeError):
        ring.read_since("1")
    with pytest.raises(TypeError):
        ring.publish("text")
    with pytest.raises(TypeError):
        ring.publish(b"x", 5)
    with pytest.raises(TypeError):
        ring.resume(5)
    with pytest.raises(ValueError):
        impl.Ring(max_frames=0)
    with pytest.raises(ValueError):
        impl.Ring(max_bytes=0)
    assert ring.pending(0) == 1
    assert "Ring(" in repr(ring)


def test_limits_fit_a_c_size_and_counters_are_read_only(impl: SimpleNamespace) -> None:
    for name in ("max_frames", "max_bytes"):
        message = rf"{name} must be a positive int up to sys\.maxsize"
        for bad in (True, 2**70, 1.5, None):
            with pytest.raises(ValueError, match=message):
                impl.Ring(**{name: bad})
    ring = impl.Ring(max_frames=2)
    ring.publish(b"x")
    for attribute in ("head", "nbytes", "evicted", "oldest", "max_frames", "max_bytes"):
        with pytest.raises(AttributeError):
            setattr(ring, attribute, 0)
    assert (ring.head, ring.max_frames) == (1, 2)


def test_trim_evicts_the_oldest_frames_down_to_a_byte_count(impl: SimpleNamespace) -> None:
    ring = impl.Ring(max_frames=8, max_bytes=1000)
    for i in range(5):
        ring.publish(b"%d" % i * 10, str(i))  # 10 bytes each
    reader = 1  # has read the first frame
    assert ring.trim(35) == 2  # 50 -> 30 bytes: frames 1 and 2 go
    assert (len(ring), ring.nbytes, ring.oldest, ring.head, ring.evicted) == (3, 30, 3, 5, 2)
    assert ring.resume("1") is None and ring.resume("2") == 3
    with pytest.raises(Lagged) as info:
        ring.read_since(reader)  # frame 2 was evicted before it read it
    assert (info.value.lost, info.value.oldest_cursor) == (1, 2)
    assert ring.read_since(2) == (b"2" * 10 + b"3" * 10 + b"4" * 10, 5)
    assert ring.trim(30) == 0
    assert ring.trim(0) == 3 and len(ring) == 0 and ring.nbytes == 0 and ring.head == 5
    assert ring.read_since(5) == (b"", 5)
    assert ring.publish(b"next") == 6  # sequence numbers go on
    with pytest.raises(ValueError, match="max_bytes must be an int >= 0"):
        ring.trim(-1)


def test_slots_grow_with_what_the_ring_holds(impl: SimpleNamespace) -> None:
    """Frames, ids, cursors and coalesced reads survive every doubling of the slots."""
    ring = impl.Ring(max_frames=100, max_bytes=1 << 20)
    cursors = []
    for n in range(1, 251):
        ring.publish(f"<{n}>".encode(), f"id{n}")
        if n % 7 == 0:
            cursors.append(ring.cursor())
        assert len(ring) == min(n, 100)
    frames = [f"<{n}>".encode() for n in range(151, 251)]
    assert ring.read_frames(150) == frames
    assert ring.read_since(150) == (b"".join(frames), 250)
    assert ring.resume("id200") == 200 and ring.resume("id150") is None
    for cursor in cursors:
        if cursor >= 150:
            assert ring.read_since(cursor)[0] == b"".join(frames[cursor - 150 :])
        else:
            with pytest.raises(Lagged):
                ring.read_since(cursor)


class RingModel(RuleBasedStateMachine):
    """Compares a Ring with a deque of (seq, frame, id) under random operations."""

    impl_name = "py"
    cursors = Bundle("cursors")

    # up to 40 frames: the slots start at 8 and double as the ring fills
    @initialize(max_frames=st.integers(1, 40), max_bytes=st.integers(4, 400))
    def setup(self, max_frames: int, max_bytes: int) -> None:
        self.ring = load_implementation(self.impl_name).Ring(max_frames, max_bytes)
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.model: deque[tuple[int, bytes, str | None]] = deque()
        self.head = 0
        self.evicted = 0

    def _oldest(self) -> int:
        return self.model[0][0] if self.model else self.head + 1

    @rule(frame=st.binary(min_size=0, max_size=12), event_id=st.none() | st.sampled_from("abc"))
    def publish(self, frame: bytes, event_id: str | None) -> None:
        if len(frame) > self.max_bytes:
            with pytest.raises(ValueError):
                self.ring.publish(frame, event_id)
            return
        while self.model and (
            len(self.model) >= self.max_frames
            or sum(len(f) for _, f, _ in self.model) + len(frame) > self.max_bytes
        ):
            self.model.popleft()
            self.evicted += 1
        self.head += 1
        self.model.append((self.head, frame, event_id))
        assert self.ring.publish(frame, event_id) == self.head

    @rule(keep=st.integers(0, 400))
    def trim(self, keep: int) -> None:
        evicted = 0
        while self.model and sum(len(f) for _, f, _ in self.model) > keep:
            self.model.popleft()
            evicted += 1
        self.evicted += evicted
        assert self.ring.trim(keep) == evicted

    @rule(target=cursors)
    def subscribe(self) -> int:
        return self.ring.cursor()

    @rule(target=cursors, cursor=consumes(cursors))
    def read(self, cursor: int) -> int:
        oldest = self._oldest()
        if cursor < oldest - 1:
            with pytest.raises(Lagged) as info:
                self.ring.read_since(cursor)
            assert info.value.lost == oldest - 1 - cursor
            assert info.value.oldest_cursor == oldest - 1
            return info.value.oldest_cursor
        frames = self.ring.read_frames(cursor)
        assert frames == [f for seq, f, _ in self.model if seq > cursor]
        data, new_cursor = self.ring.read_since(cursor)
        assert data == b"".join(f for seq, f, _ in self.model if seq > cursor)
        assert new_cursor == self.head
        return new_cursor

    @rule(event_id=st.sampled_from("abcd"))
    def resume(self, event_id: str) -> None:
        seqs = [seq for seq, _, i in self.model if i == event_id]
        assert self.ring.resume(event_id) == (seqs[-1] if seqs else None)

    @precondition(lambda self: self.head > 0)
    @rule(data=st.data())
    def resume_then_read(self, data: st.DataObject) -> None:
        seq, _, _ = data.draw(st.sampled_from(list(self.model))) if self.model else (0, b"", None)
        if seq:
            assert self.ring.read_since(seq)[0] == b"".join(f for s, f, _ in self.model if s > seq)

    @invariant()
    def sizes_agree(self) -> None:
        if not hasattr(self, "ring"):
            return
        assert len(self.ring) == len(self.model)
        assert self.ring.nbytes == sum(len(f) for _, f, _ in self.model)
        assert self.ring.head == self.head
        assert self.ring.oldest == self._oldest()
        assert self.ring.evicted == self.evicted
        assert len(self.ring) <= self.max_frames and self.ring.nbytes <= self.max_bytes


def _state_machine_test(impl_name: str) -> type:
    machine = type(f"RingModel_{impl_name}", (RingModel,), {"impl_name": impl_name})
    case = machine.TestCase
    case.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
    return case


# One test class per implementation, and no other TestCase left at module level
# (pytest would collect it again).
TestRingModel_ext = _state_machine_test("ext") if "ext" in IMPLEMENTATIONS else None
TestRingModel_py = _state_machine_test("py")
