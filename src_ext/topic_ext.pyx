# cython: language_level=3
"""Cython topics table; the theory of operation is at the top of its pure-Python
twin, ``sse_fast/_core/topic_py.py``, and both must behave identically.

Implementation notes: a ``Topic`` keeps its counters as C integers, its sets as
typed dicts and the positions of its retained frames in a C array used as a
circular buffer (8 slots at first, doubled when full: the ring evicts first, so
it holds at most the ring's frames), so the per-event store and the flush touch
no Python object but the ring (the Cython ``Ring``, cimported: its fields and
``publish`` without a Python call).
"""

from cpython.dict cimport PyDict_Copy, PyDict_DelItem, PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_READ_CHAR
from libc.stdint cimport int64_t

from sse_fast._core.ring_ext cimport Ring

import itertools

from sse_fast._core.errors import Lagged

__all__ = ["FRAME_OVERHEAD", "NO_HISTORY", "Topic", "TopicTable", "send_each"]

NO_HISTORY = Ring(1, 1)
FRAME_OVERHEAD = 320

cdef Py_ssize_t INITIAL_POSITIONS = 8  # a topic's first slots for positions

cdef Ring _NO_HISTORY = NO_HISTORY
cdef int64_t _FRAME_OVERHEAD = FRAME_OVERHEAD
# A topic's sets until a first member: never written to (module names, as in the twin).
_NO_IN_SYNC = {}
_NO_MULTI = {}
_NO_CATCHING_UP = {}
cdef dict _no_in_sync = _NO_IN_SYNC
cdef dict _no_multi = _NO_MULTI
cdef dict _no_catching_up = _NO_CATCHING_UP
cdef str _BODY = "body"
cdef object _chain = itertools.chain
cdef object _Lagged = Lagged


cdef bint _is_position_id(object event_id, int64_t position) noexcept:
    """Whether ``event_id`` is ``str(position)`` (the sequencer's id for an event
    without one), without making that string."""
    if type(event_id) is not str or position < 0:
        return False
    cdef Py_ssize_t length = PyUnicode_GET_LENGTH(event_id), i
    cdef int64_t digit, value = 0
    if length == 0 or length > 18:  # 18 digits: no overflow; positions are 16 or 17
        return False
    for i in range(length):
        digit = <int64_t>PyUnicode_READ_CHAR(event_id, i) - 48  # "0"
        if digit < 0 or digit > 9 or (digit == 0 and i == 0 and length > 1):
            return False
        value = value * 10 + digit
    return value == position


cdef class Topic:
    """One topic: its ring (from its first event on), the position of each
    retained frame, and its streams (see the module doc)."""

    cdef public str name
    cdef public Ring ring
    cdef int64_t* _positions  # circular: the oldest at _first, _count of them
    cdef Py_ssize_t _first, _count, _slots
    cdef readonly int64_t evicted_up_to  # raised by raise_floor and forget_oldest only
    cdef public object lone
    cdef public object lone_send
    cdef public dict in_sync
    cdef public dict in_sync_multi
    cdef public int64_t flushed
    cdef public Py_ssize_t subscribers
    cdef public dict catching_up
    cdef public int64_t published
    cdef public double last_activity
    cdef public Py_ssize_t partition
    cdef public object coded

    def __cinit__(self):
        self._positions = NULL
        self._first = self._count = self._slots = 0

    def __dealloc__(self):
        PyMem_Free(self._positions)

    def __init__(self, name, evicted_up_to, now, partition=0):
        self.name = name
        self.partition = partition
        self.ring = _NO_HISTORY
        self.evicted_up_to = evicted_up_to
        self.lone = None
        self.lone_send = None
        self.in_sync = _no_in_sync
        self.in_sync_multi = _no_multi
        self.flushed = 0
        self.subscribers = 0
        self.catching_up = _no_catching_up
        self.published = 0
        self.last_activity = now
        self.coded = None

    def join_in_sync(self, subscription, send):
        """``subscription`` (of this topic only) is in sync here, written with ``send``."""
        if self.lone is None:
            self.lone = subscription
            self.lone_send = send
            return
        if self.in_sync is _no_in_sync:
            self.in_sync = {}
        self.in_sync[subscription] = send

    def leave_in_sync(self, subscription):
        """``subscription`` is no longer in sync here (it may not have been)."""
        if self.lone is subscription:
            self.lone = None
            self.lone_send = None
        elif self.in_sync:
            self.in_sync.pop(subscription, None)

    def in_sync_members(self):
        """The subscriptions in sync here (of this topic only)."""
        return [*self.in_sync] if self.lone is None else [self.lone, *self.in_sync]

    def join_multi(self, subscription, send):
        """``subscription`` (of several topics) is in sync here."""
        if self.in_sync_multi is _no_multi:
            self.in_sync_multi = {}
        self.in_sync_multi[subscription] = send

    def join_catching_up(self, subscription):
        """``subscription`` writes its backlog here from its own cursor."""
        if self.catching_up is _no_catching_up:
            self.catching_up = {}
        self.catching_up[subscription] = None

    def members(self):
        """Its subscriptions that have started, in every set."""
        lone = () if self.lone is None else (self.lone,)
        coded = () if self.coded is None else self.coded
        return _chain(lone, self.in_sync, self.in_sync_multi, self.catching_up, coded)

    @property
    def has_history(self):
        """Whether the topic has its own ring (it was published to), not ``NO_HISTORY``."""
        return self.ring is not _NO_HISTORY

    @property
    def newest_position(self):
        """The position of the newest frame this topic ever held (or its floor)."""
        return self._newest()

    @property
    def positions(self):
        """The position of each retained frame, oldest first (a copy)."""
        return [self._at(i) for i in range(self._count)]

    cdef inline int64_t _at(self, Py_ssize_t index) noexcept:
        return self._positions[(self._first + index) % self._slots]

    cdef inline int64_t _newest(self) noexcept:
        if self._count:
            return self._at(self._count - 1)
        return self.evicted_up_to

    cdef int _push(self, int64_t position) except -1:
        """Keep the position of the frame just stored (the newest)."""
        cdef Py_ssize_t slots, i
        cdef int64_t* grown
        if self._count == self._slots:
            slots = self._slots * 2 if self._slots else INITIAL_POSITIONS
            grown = <int64_t*>PyMem_Malloc(slots * sizeof(int64_t))
            if grown == NULL:
                raise MemoryError()
            for i in range(self._count):
                grown[i] = self._at(i)
            PyMem_Free(self._positions)
            self._positions = grown
            self._first = 0
            self._slots = slots
        self._positions[(self._first + self._count) % self._slots] = position
        self._count += 1
        return 0

    def trim(self, max_bytes):
        """Evict the oldest frames until at most ``max_bytes`` of data remain;
        how many frames went."""
        oldest = self.ring.oldest
        evicted = self.ring.trim(max_bytes)
        self.forget_oldest(self.ring.oldest - oldest)
        return evicted

    def raise_floor(self, int64_t position):
        """What this topic can vouch for starts after ``position`` (a broker's floor,
        a break's marker): the floor rises to it, never falls."""
        if position > self.evicted_up_to:
            self.evicted_up_to = position

    cpdef forget_oldest(self, Py_ssize_t count):
        """The ring evicted its ``count`` oldest frames: drop their positions, and
        raise the floor past them (max: a broker may have raised it further)."""
        cdef int64_t floor = self.evicted_up_to, position
        if count < 0 or count > self._count:
            raise IndexError(f"cannot forget {count} of {self._count} positions")
        for _ in range(count):
            position = self._positions[self._first]
            if position > floor:
                floor = position
            self._first = (self._first + 1) % self._slots
            self._count -= 1
        self.evicted_up_to = floor

    def lagging(self):
        """Catching-up subscriptions whose cursor here (``.cursors``) fell behind the ring."""
        limit = self.ring.oldest - 1
        return [s for s in self.catching_up if s.cursors.get(self, limit) < limit]

    def position_at(self, cursor):
        """The position of the retained frame at ring cursor ``cursor``."""
        index = cursor - self.ring.oldest
        if not 0 <= index < self._count:
            raise IndexError(f"no retained frame at cursor {cursor}")
        return self._at(index)

    def cursor_after(self, position):
        """Cursor just after the last retained frame at or before ``position``."""
        low, high = self.ring.oldest, self.ring.head
        while low <= high:
            middle = (low + high) // 2
            if self.position_at(middle) <= position:
                low = middle + 1
            else:
                high = middle - 1
        return low - 1


cdef class TopicTable:
    """The topics of one hub by name, their rings' accounting, and the per-event
    store and flush (see the module doc). ``over_budget`` and ``get`` are the
    subclass's."""

    cdef public dict by_name
    cdef public Py_ssize_t ring_max_frames
    cdef public Py_ssize_t ring_max_bytes
    cdef public int64_t history_budget
    cdef public int64_t retained_bytes
    cdef public int64_t retained_frames
    cdef public Py_ssize_t with_history
    cdef readonly int64_t last_position  # moved by store and skip_to only
    cdef public dict by_write
    cdef public list trimmed

    def __init__(self, ring_max_frames, ring_max_bytes, history_budget, last_position=0):
        self.by_name = {}
        self.ring_max_frames = ring_max_frames
        self.ring_max_bytes = ring_max_bytes
        self.history_budget = history_budget
        self.retained_bytes = 0
        self.retained_frames = 0
        self.with_history = 0
        self.last_position = last_position
        self.by_write = {}
        self.trimmed = []

    def get(self, name, now):
        """The topic ``name``, created if it does not exist (the subclass's)."""
        raise NotImplementedError

    def skip_to(self, position):
        """Positions up to ``position`` are past here without events stored (see the
        module doc): the newest applied position rises to it, never falls."""
        cdef int64_t target = position
        if target > self.last_position:
            self.last_position = target

    def over_budget(self):
        """Evict history until it fits ``history_budget`` again (the subclass's)."""
        raise NotImplementedError

    def keep(self, topic, frame, event_id, position):
        """Store one frame in ``topic`` (its ring made with its first frame), with
        its position; how many of the topic's own older frames that evicted.
        Over the budget, ``over_budget`` runs."""
        return self._keep(<Topic?>topic, frame, event_id, position)

    cdef Py_ssize_t _keep(
        self, Topic topic, object frame, object event_id, int64_t position
    ) except -1:
        cdef Ring ring = topic.ring
        cdef int64_t data, oldest, evicted
        if ring is _NO_HISTORY:
            ring = topic.ring = Ring(self.ring_max_frames, self.ring_max_bytes)
            self.with_history += 1
        data = ring.nbytes
        oldest = ring.head - ring._len
        # an id that is the position's own is not indexed: resuming finds it by position
        ring.publish(frame, None if _is_position_id(event_id, position) else event_id)
        evicted = ring.head - ring._len - oldest
        if evicted:
            topic.forget_oldest(evicted)
        topic._push(position)
        topic.published += 1
        self.retained_bytes += ring.nbytes - data
        self.retained_frames += 1 - evicted
        cdef dict by_write = self.by_write
        if PyDict_GetItem(by_write, topic) != NULL:
            PyDict_DelItem(by_write, topic)
        PyDict_SetItem(by_write, topic, None)
        if self.retained_bytes + _FRAME_OVERHEAD * self.retained_frames > self.history_budget:
            self.over_budget()
        return evicted

    def store(self, items, start, now, dirty, accepted):
        """Store ``items[start:]``; ``(index to go on from, topic to check for lag
        or None)`` (see the module doc)."""
        return self._store(items, start, now, dirty, accepted)

    cdef tuple _store(self, list items, Py_ssize_t start, double now, dict dirty, list accepted):
        cdef dict by_name = self.by_name
        cdef int64_t last_position = self.last_position, position
        cdef Py_ssize_t index, evicted
        cdef tuple item
        cdef object name, accepted_at, last
        cdef PyObject* found
        cdef Topic topic
        try:
            for index in range(start, PyList_GET_SIZE(items)):
                # (position, id, topics, frame, accepted_at): the brokers' Sequenced
                item = <tuple?>PyList_GET_ITEM(items, index)
                position = <object>PyTuple_GET_ITEM(item, 0)
                if position > last_position:
                    last_position = position
                    accepted_at = <object>PyTuple_GET_ITEM(item, 4)
                    if accepted:
                        last = accepted[PyList_GET_SIZE(accepted) - 1]
                        if last[0] == accepted_at:
                            last[1] += 1
                        else:
                            accepted.append([accepted_at, 1])
                    else:
                        accepted.append([accepted_at, 1])
                for name in <tuple?>PyTuple_GET_ITEM(item, 2):
                    found = PyDict_GetItem(by_name, name)
                    if found == NULL:
                        topic = self.get(name, now)
                    else:
                        topic = <Topic>found
                        topic.last_activity = now
                    if position <= topic._newest():
                        continue  # already stored
                    evicted = self._keep(
                        topic,
                        <object>PyTuple_GET_ITEM(item, 3),
                        <object>PyTuple_GET_ITEM(item, 1),
                        position,
                    )
                    PyDict_SetItem(dirty, topic, None)
                    if evicted and topic.catching_up:
                        return index, topic
                    if self.trimmed:
                        return index, None
        finally:
            self.last_position = last_position
        return PyList_GET_SIZE(items), None

    def flush(self, dirty, written_type, template):
        """Write each dirty topic's new frames to its in-sync streams; ``(delivered,
        slow, failed, lagged, multi)`` (see the module doc)."""
        return self._flush(dirty, written_type, template)

    cdef tuple _flush(self, dict dirty, type written_type, dict template):
        cdef int64_t delivered = 0, start, count
        cdef list slow = [], failed = [], lagged = []
        cdef object multi = None
        cdef Topic topic
        cdef object data, message, send, result, subscription, key
        cdef Ring ring
        for key in dirty:
            topic = <Topic>key
            start = topic.flushed
            if topic.in_sync_multi or topic.coded is not None:
                if multi is None:
                    multi = {}
                multi[topic] = start
            ring = topic.ring
            count = ring.head - start
            if count <= 0:
                continue
            topic.flushed = ring.head
            try:
                data = ring._read(start)
            except _Lagged as lag:  # more stored in one go than the ring holds
                lagged.append((topic, lag.lost))
                continue
            message = None
            send = topic.lone_send
            if send is not None:
                message = PyDict_Copy(template)
                PyDict_SetItem(message, _BODY, data)
                try:
                    result = send(message)
                except Exception:
                    failed.append(topic.lone)
                else:
                    if type(result) is not written_type:
                        slow.append((topic.lone, result))
                    delivered += count
            if topic.in_sync:
                if message is None:
                    message = PyDict_Copy(template)
                    PyDict_SetItem(message, _BODY, data)
                for subscription, send in topic.in_sync.items():
                    try:
                        result = send(message)
                    except Exception:
                        failed.append(subscription)
                        continue
                    if type(result) is not written_type:
                        slow.append((subscription, result))
                    delivered += count
        return delivered, slow, failed, lagged, multi


def send_each(dict targets, object message, type written_type, list slow, list failed):
    """Call each target's ``send`` with ``message``; pending writes go to ``slow`` as
    ``(subscription, result)``, sends that raise to ``failed``; how many were sent."""
    cdef Py_ssize_t sent = 0
    cdef object subscription, send, result
    for subscription, send in targets.items():
        try:
            result = send(message)
        except Exception:
            failed.append(subscription)
            continue
        sent += 1
        if type(result) is not written_type:
            slow.append((subscription, result))
    return sent
