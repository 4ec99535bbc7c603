"""The Cython topics table; the same API as ``sse_fast._core.topic_py`` (whose
module docstring holds the theory of operation).

The API of both implementations, written once: ``.ci/stubtest.sh`` checks the
compiled module and the pure twin (``sse_fast._core.topic_py``) against it with
``mypy.stubtest``, and ``tests/test_parity.py`` reads it back in every test run.
"""

from collections.abc import Callable, Iterator
from typing import Any, Final

from typing_extensions import disjoint_base

from sse_fast._core.ring_ext import Ring

__all__ = ["FRAME_OVERHEAD", "NO_HISTORY", "Topic", "TopicTable", "send_each"]

NO_HISTORY: Final[Ring]
FRAME_OVERHEAD: Final[int]

@disjoint_base  # a Cython cdef class
class Topic:
    """One topic: its ring (from its first event on), the position of each
    retained frame, and its streams (see the module doc)."""

    name: str
    ring: Ring
    lone: Any
    lone_send: Callable[[Any], Any] | None
    in_sync: dict[Any, Callable[[Any], Any]]
    in_sync_multi: dict[Any, Callable[[Any], Any]]
    flushed: int
    subscribers: int
    catching_up: dict[Any, None]
    published: int
    last_activity: float
    partition: int
    coded: Any
    def __init__(self, name: str, evicted_up_to: int, now: float, partition: int = 0) -> None: ...
    @property
    def evicted_up_to(self) -> int: ...
    def raise_floor(self, position: int) -> None: ...
    def join_in_sync(self, subscription: Any, send: Callable[[Any], Any]) -> None: ...
    def leave_in_sync(self, subscription: Any) -> None: ...
    def in_sync_members(self) -> list[Any]: ...
    def join_multi(self, subscription: Any, send: Callable[[Any], Any]) -> None: ...
    def join_catching_up(self, subscription: Any) -> None: ...
    def members(self) -> Iterator[Any]: ...
    @property
    def has_history(self) -> bool:
        """Whether the topic has its own ring (it was published to), not ``NO_HISTORY``."""
    @property
    def newest_position(self) -> int:
        """The position of the newest frame this topic ever held (or its floor)."""
    @property
    def positions(self) -> list[int]:
        """The position of each retained frame, oldest first (a copy)."""
    def trim(self, max_bytes: int) -> int: ...
    def forget_oldest(self, count: int) -> None: ...
    def lagging(self) -> list[Any]: ...
    def position_at(self, cursor: int) -> int: ...
    def cursor_after(self, position: int) -> int: ...

@disjoint_base  # a Cython cdef class
class TopicTable:
    """The topics of one hub by name, their rings' accounting, and the per-event
    store and flush (see the module doc). ``over_budget`` and ``get`` are the
    subclass's."""

    by_name: dict[str, Topic]
    ring_max_frames: int
    ring_max_bytes: int
    history_budget: int
    retained_bytes: int
    retained_frames: int
    with_history: int
    by_write: dict[Topic, None]
    trimmed: list[Topic]
    def __init__(
        self, ring_max_frames: int, ring_max_bytes: int, history_budget: int, last_position: int = 0
    ) -> None: ...
    @property
    def last_position(self) -> int:
        """The newest position applied here: stored, skipped to, or the start (see the
        module doc); read-only (``store`` and ``skip_to`` move it)."""
    def get(self, name: str, now: float) -> Topic: ...
    def skip_to(self, position: int) -> None: ...
    def over_budget(self) -> None: ...
    def keep(self, topic: Topic, frame: bytes, event_id: str, position: int) -> int: ...
    def store(
        self,
        items: list[Any],
        start: int,
        now: float,
        dirty: dict[Topic, None],
        accepted: list[list[Any]],
    ) -> tuple[int, Topic | None]: ...
    def flush(
        self, dirty: dict[Topic, None], written_type: type, template: dict[str, Any]
    ) -> tuple[
        int, list[tuple[Any, Any]], list[Any], list[tuple[Topic, int]], dict[Topic, int] | None
    ]: ...

def send_each(
    targets: dict[Any, Callable[[Any], Any]],
    message: Any,
    written_type: type,
    slow: list[tuple[Any, Any]],
    failed: list[Any],
) -> int:
    """Call each target's ``send`` with ``message``; pending writes go to ``slow`` as
    ``(subscription, result)``, sends that raise to ``failed``; how many were sent."""
