"""The Cython ring-buffer topic log; the same API as ``sse_fast._core.ring_py``
(whose module docstring holds the theory of operation).

The API of both implementations, written once: ``.ci/stubtest.sh`` checks the
compiled module and the pure twin (``sse_fast._core.ring_py``) against it with
``mypy.stubtest``, and ``tests/test_parity.py`` reads it back in every test run.
"""

from typing import Final

from typing_extensions import disjoint_base

from sse_fast._core.errors import Lagged as Lagged

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_FRAMES", "Ring"]

DEFAULT_MAX_FRAMES: Final[int]
DEFAULT_MAX_BYTES: Final[int]
INITIAL_SLOTS: Final[int]

@disjoint_base  # a Cython cdef class
class Ring:
    """A bounded log of pre-encoded frames with cursors, lag detection and resume."""

    @property
    def max_frames(self) -> int:
        """The most frames retained (the older ones are evicted)."""
    @property
    def max_bytes(self) -> int:
        """The most bytes of frame data retained (the older frames are evicted)."""
    @property
    def head(self) -> int:
        """Sequence number of the newest frame (0 before the first publish)."""
    @property
    def nbytes(self) -> int:
        """Bytes of frame data retained."""
    @property
    def evicted(self) -> int:
        """Frames evicted so far."""
    @property
    def oldest(self) -> int:
        """Sequence number of the oldest retained frame (``head + 1`` when empty)."""
    def __init__(self, max_frames: int = 1024, max_bytes: int = 16777216) -> None: ...
    def __len__(self) -> int: ...
    def cursor(self) -> int: ...
    def publish(self, frame: bytes, event_id: str | None = None) -> int: ...
    def trim(self, max_bytes: int) -> int: ...
    def pending(self, cursor: int) -> int: ...
    def read_since(self, cursor: int) -> tuple[bytes, int]: ...
    def read_frames(self, cursor: int) -> list[bytes]: ...
    def resume(self, event_id: str) -> int | None: ...
