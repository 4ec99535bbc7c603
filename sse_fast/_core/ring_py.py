"""Pure-Python ring-buffer topic log: the reference twin of ``src_ext/ring_ext.pyx``.

Theory of operation
-------------------
* Sequence numbers. The n-th frame published gets sequence number n (from 1).
  ``head`` is the newest sequence number (0 before the first publish).
  Retained frames are ``oldest .. head``.
* Cursors. A subscriber is a cursor: a plain int, the sequence number of the
  last frame it received (0 = before everything; ``head`` = "from now on").
  The ring keeps no per-subscriber state, so a subscriber that vanishes
  leaves nothing behind to clean up.
* Publishing stores the frame once (O(1) amortised). It first evicts from the
  oldest end until the ring holds fewer than ``max_frames`` frames and the new
  frame fits in ``max_bytes``. A frame larger than ``max_bytes`` is refused with
  ``ValueError``; nothing is stored partially.
* Trimming. ``trim(max_bytes)`` evicts from the oldest end until at most
  ``max_bytes`` are retained (a budget shared by every topic): the same
  eviction as publishing's, so cursors behind it lag by the same rule.
* Reading. ``read_since(cursor)`` with ``oldest - 1 <= cursor <= head`` returns
  ``(frames cursor+1 .. head concatenated, head)``. With nothing pending it
  returns ``(b"", cursor)``; with one pending frame it returns the stored bytes
  object itself, so N up-to-date subscribers share one object (no copies).
* Lag. ``cursor < oldest - 1`` means frames were evicted before the subscriber
  read them: ``read_since`` raises ``Lagged(lost, oldest_cursor)`` with the
  number lost. Never a silent skip; the caller decides (disconnect with a
  reason, or continue from ``oldest_cursor`` knowing the gap).
* Resume. Each frame may carry a user-visible event id. ``resume(event_id)``
  returns a cursor just after the newest retained frame with that id, or None
  when no retained frame has it (never published here, or already evicted):
  the caller tells the client it may have missed events and continues from
  ``head``. ``evicted`` (frames evicted so far) helps tell the two apart.
* Memory is bounded by ``max_frames`` slots, ``max_bytes`` of frame data and
  an id map with at most ``max_frames`` entries. Slots are sized to what the
  ring holds: a new ring has 8 (or ``max_frames`` if fewer), and a publish
  that finds them all in use doubles them, up to ``max_frames``, so a quiet
  topic costs a few hundred bytes, not ``max_frames`` slots.
"""

from __future__ import annotations

import sys

from .errors import Lagged

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_FRAMES", "Ring"]

DEFAULT_MAX_FRAMES = 1024
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
INITIAL_SLOTS = 8


def _check_size_limit(name: str, value: object) -> None:
    """A positive int that fits a C ``Py_ssize_t``, as the Cython twin stores it."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= sys.maxsize:
        raise ValueError(f"{name} must be a positive int up to sys.maxsize, got {value!r}")


class Ring:
    """A bounded log of pre-encoded frames with cursors, lag detection and resume."""

    __slots__ = (
        "_capacity",
        "_evicted",
        "_frames",
        "_head",
        "_ids",
        "_index",
        "_len",
        "_max_bytes",
        "_max_frames",
        "_nbytes",
    )

    def __init__(
        self, max_frames: int = DEFAULT_MAX_FRAMES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        _check_size_limit("max_frames", max_frames)
        _check_size_limit("max_bytes", max_bytes)
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._head = 0
        self._nbytes = 0
        self._evicted = 0
        self._len = 0
        self._capacity = min(max_frames, INITIAL_SLOTS)
        self._frames: list[bytes | None] = [None] * self._capacity
        self._ids: list[str | None] = [None] * self._capacity
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return self._len

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(
            "a Ring cannot be pickled or copied; to carry frames over, publish "
            "read_frames(...) into a new Ring"
        )

    # Read-only, as in the Cython ring: only publishing changes them.
    @property
    def head(self) -> int:
        """Sequence number of the newest frame (0 before the first publish)."""
        return self._head

    @property
    def nbytes(self) -> int:
        """Bytes of frame data retained."""
        return self._nbytes

    @property
    def evicted(self) -> int:
        """Frames evicted so far."""
        return self._evicted

    @property
    def max_frames(self) -> int:
        """The most frames retained (the older ones are evicted)."""
        return self._max_frames

    @property
    def max_bytes(self) -> int:
        """The most bytes of frame data retained (the older frames are evicted)."""
        return self._max_bytes

    @property
    def oldest(self) -> int:
        """Sequence number of the oldest retained frame (``head + 1`` when empty)."""
        return self._head - self._len + 1

    def cursor(self) -> int:
        """A cursor positioned at "now": it will read only frames published later."""
        return self._head

    def publish(self, frame: bytes, event_id: str | None = None) -> int:
        """Store one encoded frame; return its sequence number."""
        if not isinstance(frame, bytes):
            raise TypeError(f"frame must be bytes, not {type(frame).__name__}")
        if event_id is not None and not isinstance(event_id, str):
            raise TypeError(f"event_id must be str or None, not {type(event_id).__name__}")
        size = len(frame)
        if size > self._max_bytes:
            raise ValueError(
                f"frame of {size} bytes exceeds the ring's max_bytes ({self._max_bytes}); "
                "raise max_bytes or publish smaller events"
            )
        while self._len and (
            self._len >= self._max_frames or self._nbytes + size > self._max_bytes
        ):
            self._evict_oldest()
        if self._len == self._capacity:
            self._grow()
        self._head += 1
        slot = self._head % self._capacity
        self._frames[slot] = frame
        self._ids[slot] = event_id
        if event_id is not None:
            self._index[event_id] = self._head
        self._len += 1
        self._nbytes += size
        return self._head

    def _grow(self) -> None:
        """Double the slots (up to ``max_frames``); frames keep slot ``seq % capacity``."""
        old, old_ids, old_capacity = self._frames, self._ids, self._capacity
        capacity = min(self._max_frames, old_capacity * 2)
        self._frames = [None] * capacity
        self._ids = [None] * capacity
        for seq in range(self._head - self._len + 1, self._head + 1):
            self._frames[seq % capacity] = old[seq % old_capacity]
            self._ids[seq % capacity] = old_ids[seq % old_capacity]
        self._capacity = capacity

    def _evict_oldest(self) -> None:
        seq = self._head - self._len + 1
        slot = seq % self._capacity
        frame = self._frames[slot]
        event_id = self._ids[slot]
        assert frame is not None
        self._nbytes -= len(frame)
        self._frames[slot] = None
        self._ids[slot] = None
        if event_id is not None and self._index.get(event_id) == seq:
            del self._index[event_id]
        self._len -= 1
        self._evicted += 1

    def trim(self, max_bytes: int) -> int:
        """Evict the oldest frames until at most ``max_bytes`` bytes are retained
        (a server-wide budget); return how many were evicted."""
        before = self._evicted
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        while self._len and self._nbytes > max_bytes:
            self._evict_oldest()
        return self._evicted - before

    def _check_cursor(self, cursor: int) -> None:
        if not isinstance(cursor, int) or isinstance(cursor, bool):
            raise TypeError(f"cursor must be int, not {type(cursor).__name__}")
        if cursor < 0 or cursor > self._head:
            raise ValueError(
                f"cursor {cursor} is outside 0..{self._head}: it does not come from this ring"
            )

    def pending(self, cursor: int) -> int:
        """How many frames are newer than ``cursor`` (lost ones included)."""
        self._check_cursor(cursor)
        return self._head - cursor

    def read_since(self, cursor: int) -> tuple[bytes, int]:
        """All frames newer than ``cursor`` as one bytes object, and the new cursor.

        Raises ``Lagged`` when some of them were already evicted.
        """
        self._check_cursor(cursor)
        count = self._head - cursor
        if count == 0:
            return b"", cursor
        if count > self._len:
            oldest = self._head - self._len + 1
            raise Lagged(oldest - 1 - cursor, oldest - 1)
        frames = self._frames
        cap = self._capacity
        if count == 1:
            frame = frames[self._head % cap]
            assert frame is not None
            return frame, self._head
        start = (cursor + 1) % cap
        stop = start + count
        chunk = frames[start:stop] if stop <= cap else frames[start:] + frames[: stop - cap]
        return b"".join(chunk), self._head  # type: ignore[arg-type]

    def read_frames(self, cursor: int) -> list[bytes]:
        """The frames newer than ``cursor``, one bytes object each (raises ``Lagged``)."""
        self._check_cursor(cursor)
        count = self._head - cursor
        if count > self._len:
            oldest = self._head - self._len + 1
            raise Lagged(oldest - 1 - cursor, oldest - 1)
        cap = self._capacity
        return [self._frames[seq % cap] for seq in range(cursor + 1, self._head + 1)]  # type: ignore[misc]

    def resume(self, event_id: str) -> int | None:
        """Cursor just after the newest retained frame with ``event_id``, else None."""
        if not isinstance(event_id, str):
            raise TypeError(f"event_id must be str, not {type(event_id).__name__}")
        return self._index.get(event_id)

    def __repr__(self) -> str:
        return (
            f"Ring(frames={self._len}/{self._max_frames}, bytes={self._nbytes}/{self._max_bytes}, "
            f"head={self._head}, evicted={self._evicted})"
        )
