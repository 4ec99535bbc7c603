"""The Cython records codec; the same API as ``sse_fast._core.records_py`` (whose
module docstring holds the theory of operation).

The API of both implementations, written once: ``.ci/stubtest.sh`` checks the
compiled module and the pure twin (``sse_fast._core.records_py``) against it with
``mypy.stubtest``, and ``tests/test_parity.py`` reads it back in every test run.
"""

from collections.abc import Sequence
from typing import Any

from typing_extensions import disjoint_base

__all__ = ["EVENT", "MAX_RECORD", "Tally", "pack_events", "scan_records", "tally_topics"]

EVENT: int
MAX_RECORD: int

def pack_events(items: Sequence[Any], wall: float) -> bytes: ...
def scan_records(
    data: bytes, start: int, event_type: type[Any] | None, stop: int = -1
) -> tuple[list[Any], list[tuple[int, int, bytes]], int, int, int, str, int]: ...

@disjoint_base  # a Cython cdef class
class Tally:
    count: int
    wall: float
    segment: int
    def __init__(self, count: int = 0, wall: float = 0.0, segment: int = -1) -> None: ...

def tally_topics(
    items: Sequence[Any],
    wall: float,
    tallies: dict[str, Tally],
    live: dict[str, Tally],
    segment: int,
) -> None: ...
