# cython: language_level=3
"""Cython ring-buffer topic log; the theory of operation (sequence numbers,
cursors, eviction, lag and resume rules) is at the top of its pure-Python twin,
``sse_fast/_core/ring_py.py``, and both must behave identically.

Implementation notes: frames live in a Python list used as a circular buffer;
a parallel C array keeps, per slot, the running total of bytes published up to
that frame, so the size of any coalesced read is known in O(1) and the read is
one allocation plus one ``memcpy`` per frame. The ids' slots and their index are
made with the first frame that has an id: a ring of frames without ids (a hub's,
for the ids the sequencer gives) has neither.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t
from libc.string cimport memcpy

import sys

from sse_fast._core.errors import Lagged

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_FRAMES", "Ring"]

DEFAULT_MAX_FRAMES = 1024
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
INITIAL_SLOTS = 8


cdef int _check_size_limit(str name, object value) except -1:
    """A positive int that fits a C ``Py_ssize_t`` (the pure twin checks the same)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= sys.maxsize:
        raise ValueError(f"{name} must be a positive int up to sys.maxsize, got {value!r}")
    return 0


cdef class Ring:
    """A bounded log of pre-encoded frames with cursors, lag detection and resume."""

    # the attributes and C methods are declared in sse_fast/_core/ring_ext.pxd

    def __cinit__(self):
        self._cumulative = NULL

    def __init__(self, max_frames=DEFAULT_MAX_FRAMES, max_bytes=DEFAULT_MAX_BYTES):
        _check_size_limit("max_frames", max_frames)
        _check_size_limit("max_bytes", max_bytes)
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.head = 0
        self.nbytes = 0
        self.evicted = 0
        self._len = 0
        self._total = 0
        self._capacity = min(max_frames, INITIAL_SLOTS)
        self._frames = [None] * self._capacity
        self._ids = None  # and no index: made with the first event id (most rings get none)
        self._index = None
        PyMem_Free(self._cumulative)
        self._cumulative = <int64_t*>PyMem_Malloc(self._capacity * sizeof(int64_t))
        if self._cumulative == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self._cumulative)

    def __len__(self):
        return self._len

    def __reduce__(self):
        raise TypeError(
            "a Ring cannot be pickled or copied; to carry frames over, publish "
            "read_frames(...) into a new Ring"
        )

    @property
    def oldest(self):
        """Sequence number of the oldest retained frame (``head + 1`` when empty)."""
        return self.head - self._len + 1

    cpdef int64_t cursor(self):
        """A cursor positioned at "now": it will read only frames published later."""
        return self.head

    cpdef int64_t publish(self, frame, event_id=None) except -1:
        """Store one encoded frame; return its sequence number."""
        cdef Py_ssize_t size, slot
        if not isinstance(frame, bytes):
            raise TypeError(f"frame must be bytes, not {type(frame).__name__}")
        if event_id is not None and not isinstance(event_id, str):
            raise TypeError(f"event_id must be str or None, not {type(event_id).__name__}")
        size = PyBytes_GET_SIZE(frame)
        if size > self.max_bytes:
            raise ValueError(
                f"frame of {size} bytes exceeds the ring's max_bytes ({self.max_bytes}); "
                "raise max_bytes or publish smaller events"
            )
        while self._len and (self._len >= self.max_frames or self.nbytes + size > self.max_bytes):
            self._evict_oldest()
        if self._len == self._capacity:
            self._grow()
        self.head += 1
        slot = self.head % self._capacity
        self._frames[slot] = frame
        if event_id is not None:
            if self._ids is None:
                self._ids = [None] * self._capacity
                self._index = {}
            self._ids[slot] = event_id  # the slot is empty: evicted, or never used
            self._index[event_id] = self.head
        self._len += 1
        self.nbytes += size
        self._total += size
        self._cumulative[slot] = self._total
        return self.head

    cdef int _grow(self) except -1:
        """Double the slots (up to ``max_frames``); frames keep slot ``seq % capacity``."""
        cdef Py_ssize_t old_capacity = self._capacity
        cdef Py_ssize_t capacity = min(self.max_frames, old_capacity * 2)
        cdef int64_t seq
        cdef list frames = [None] * capacity
        cdef list ids = None if self._ids is None else [None] * capacity
        cdef int64_t* cumulative = <int64_t*>PyMem_Malloc(capacity * sizeof(int64_t))
        if cumulative == NULL:
            raise MemoryError()
        seq = self.head - self._len + 1
        while seq <= self.head:
            frames[seq % capacity] = self._frames[seq % old_capacity]
            if ids is not None:
                ids[seq % capacity] = self._ids[seq % old_capacity]
            cumulative[seq % capacity] = self._cumulative[seq % old_capacity]
            seq += 1
        PyMem_Free(self._cumulative)
        self._cumulative = cumulative
        self._frames = frames
        self._ids = ids
        self._capacity = capacity
        return 0

    cdef int _evict_oldest(self) except -1:
        cdef int64_t seq = self.head - self._len + 1
        cdef Py_ssize_t slot = seq % self._capacity
        cdef object frame = self._frames[slot]
        cdef object event_id
        self.nbytes -= PyBytes_GET_SIZE(frame)
        self._frames[slot] = None
        if self._ids is not None:
            event_id = self._ids[slot]
            self._ids[slot] = None
            if event_id is not None and self._index.get(event_id) == seq:
                del self._index[event_id]
        self._len -= 1
        self.evicted += 1
        return 0

    def trim(self, max_bytes):
        """Evict the oldest frames until at most ``max_bytes`` bytes are retained
        (a server-wide budget); return how many were evicted."""
        cdef int64_t before = self.evicted
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        while self._len and self.nbytes > max_bytes:
            self._evict_oldest()
        return self.evicted - before

    cdef int _check_cursor(self, object cursor) except -1:
        if not isinstance(cursor, int) or isinstance(cursor, bool):
            raise TypeError(f"cursor must be int, not {type(cursor).__name__}")
        if cursor < 0 or cursor > self.head:
            raise ValueError(
                f"cursor {cursor} is outside 0..{self.head}: it does not come from this ring"
            )
        return 0

    def pending(self, cursor):
        """How many frames are newer than ``cursor`` (lost ones included)."""
        self._check_cursor(cursor)
        return self.head - <int64_t>cursor

    def read_since(self, cursor):
        """All frames newer than ``cursor`` as one bytes object, and the new cursor.

        Raises ``Lagged`` when some of them were already evicted.
        """
        self._check_cursor(cursor)
        if cursor == self.head:
            return b"", cursor
        return self._read(cursor), self.head

    cdef object _read(self, int64_t c):
        """The frames after cursor ``c`` (``c < head``: the caller checks) as one bytes
        object; ``Lagged`` when some of them were evicted."""
        cdef int64_t count, oldest, seq, size
        cdef Py_ssize_t cap = self._capacity, pos = 0
        cdef bytes out
        cdef object frame
        cdef char* w
        count = self.head - c
        if count > self._len:
            oldest = self.head - self._len + 1
            raise Lagged(oldest - 1 - c, oldest - 1)
        if count == 1:
            return <object>PyList_GET_ITEM(self._frames, self.head % cap)
        size = self._total - (self._cumulative[c % cap] if c >= self.head - self._len + 1
                              else self._total - self.nbytes)
        out = PyBytes_FromStringAndSize(NULL, size)
        w = PyBytes_AS_STRING(out)
        seq = c + 1
        while seq <= self.head:
            frame = <object>PyList_GET_ITEM(self._frames, seq % cap)
            memcpy(w + pos, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))
            pos += PyBytes_GET_SIZE(frame)
            seq += 1
        return out

    def read_frames(self, cursor):
        """The frames newer than ``cursor``, one bytes object each (raises ``Lagged``)."""
        cdef int64_t c, count, oldest, seq
        cdef Py_ssize_t cap = self._capacity
        cdef list out = []
        self._check_cursor(cursor)
        c = cursor
        count = self.head - c
        if count > self._len:
            oldest = self.head - self._len + 1
            raise Lagged(oldest - 1 - c, oldest - 1)
        seq = c + 1
        while seq <= self.head:
            out.append(<object>PyList_GET_ITEM(self._frames, seq % cap))
            seq += 1
        return out

    def resume(self, event_id):
        """Cursor just after the newest retained frame with ``event_id``, else None."""
        if not isinstance(event_id, str):
            raise TypeError(f"event_id must be str, not {type(event_id).__name__}")
        return None if self._index is None else self._index.get(event_id)

    def __repr__(self):
        return (
            f"Ring(frames={self._len}/{self.max_frames}, bytes={self.nbytes}/{self.max_bytes}, "
            f"head={self.head}, evicted={self.evicted})"
        )
