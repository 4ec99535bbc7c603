# cython: language_level=3
"""Cython records codec; the pure-Python twin is ``sse_fast/_core/records_py.py``
(whose module docstring holds the theory of operation).

Packing measures the batch once, allocates the result once and writes each
record in place, its CRC-32 from zlib over the parts; reading walks the
buffer with a pointer, the little-endian fields assembled byte by byte (so
the file is the same on any host), and makes the strings and the frame
directly from the bytes.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

__all__ = ["EVENT", "MAX_RECORD", "Tally", "pack_events", "scan_records", "tally_topics"]


cdef extern from "zlib.h":
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int length) nogil


EVENT = 1
MAX_RECORD = 1 << 30
cdef int _EVENT = 1
cdef Py_ssize_t _MAX_RECORD = 1 << 30
cdef Py_ssize_t _PREFIX = 8  # <II
cdef Py_ssize_t _HEAD = 26  # <BqdBII
cdef object _tuple_new = tuple.__new__
cdef object _join = "\n".join


cdef inline void _put32(uint8_t *out, uint32_t value) noexcept nogil:
    out[0] = value & 0xFF
    out[1] = (value >> 8) & 0xFF
    out[2] = (value >> 16) & 0xFF
    out[3] = (value >> 24) & 0xFF


cdef inline void _put64(uint8_t *out, uint64_t value) noexcept nogil:
    cdef int i
    for i in range(8):
        out[i] = (value >> (8 * i)) & 0xFF


cdef inline uint32_t _get32(const uint8_t *data) noexcept nogil:
    return (<uint32_t>data[0] | (<uint32_t>data[1] << 8) | (<uint32_t>data[2] << 16)
            | (<uint32_t>data[3] << 24))


cdef inline uint64_t _get64(const uint8_t *data) noexcept nogil:
    cdef uint64_t value = 0
    cdef int i
    for i in range(8):
        value |= (<uint64_t>data[i]) << (8 * i)
    return value


def pack_events(items, double wall):
    cdef list idents = []
    cdef list names_list = []
    cdef list frames = []
    cdef list positions = []
    cdef list givens = []
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t count, i, id_size, names_size, frame_size, body
    cdef bytes ident, names, frame
    cdef tuple topics
    cdef object position
    cdef str event_id
    for item in items:
        position = item.position
        event_id = item.id
        topics = item.topics
        ident = event_id.encode("utf-8")
        if PyTuple_GET_SIZE(topics) == 1:
            names = (<str>topics[0]).encode("utf-8")
        else:
            names = (<str>_join(topics)).encode("utf-8")
        frame = item.frame
        idents.append(ident)
        names_list.append(names)
        frames.append(frame)
        positions.append(position)
        givens.append(event_id != str(position))
        total += _PREFIX + _HEAD + len(ident) + len(names) + len(frame)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t *at = <uint8_t *>PyBytes_AS_STRING(out)
    cdef uint8_t *head
    cdef uint64_t wall_bits
    cdef uint32_t crc
    memcpy(&wall_bits, &wall, 8)
    count = len(frames)
    for i in range(count):
        ident = <bytes>idents[i]
        names = <bytes>names_list[i]
        frame = <bytes>frames[i]
        id_size = PyBytes_GET_SIZE(ident)
        names_size = PyBytes_GET_SIZE(names)
        frame_size = PyBytes_GET_SIZE(frame)
        body = _HEAD + id_size + names_size + frame_size
        head = at + _PREFIX
        head[0] = _EVENT
        _put64(head + 1, <uint64_t><int64_t>positions[i])
        _put64(head + 9, wall_bits)
        head[17] = 1 if givens[i] else 0
        _put32(head + 18, <uint32_t>id_size)
        _put32(head + 22, <uint32_t>names_size)
        memcpy(head + _HEAD, PyBytes_AS_STRING(ident), id_size)
        memcpy(head + _HEAD + id_size, PyBytes_AS_STRING(names), names_size)
        memcpy(head + _HEAD + id_size + names_size, PyBytes_AS_STRING(frame), frame_size)
        crc = crc32(0, head, <unsigned int>body)
        _put32(at, <uint32_t>body)
        _put32(at + 4, crc)
        at += _PREFIX + body
    return out


def scan_records(bytes data, Py_ssize_t start, event_type, Py_ssize_t stop=-1):
    cdef const uint8_t *base = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t limit = size if stop < 0 or stop > size else stop
    cdef Py_ssize_t offset = start
    cdef Py_ssize_t length, body, end, at_id, at_names, at_frame
    cdef uint32_t id_size, names_size
    cdef int64_t position
    cdef int64_t last = 0
    cdef Py_ssize_t count = 0
    cdef int kind
    cdef int last_kind = 0
    cdef uint64_t wall_bits
    cdef double wall
    cdef list events = []
    cdef list others = []
    cdef str damage = ""
    cdef str names
    cdef bint build = event_type is not None
    if offset < 0:
        raise ValueError("start must not be negative")
    while offset < limit:
        if size - offset < _PREFIX:
            damage = "a record's length is cut short"
            break
        length = _get32(base + offset)
        body = offset + _PREFIX
        end = body + length
        if length == 0 or length > _MAX_RECORD or end > size:
            damage = "a record runs past the end of the file"
            break
        if crc32(0, base + body, <unsigned int>length) != _get32(base + offset + 4):
            damage = "a record's checksum does not match"
            break
        kind = base[body]
        last_kind = kind
        if kind == _EVENT and length >= _HEAD:
            position = <int64_t>_get64(base + body + 1)
            id_size = _get32(base + body + 18)
            names_size = _get32(base + body + 22)
            at_id = body + _HEAD
            at_names = at_id + id_size
            at_frame = at_names + names_size
            if at_frame > end:
                damage = "an event record's lengths run past its end"
                break
            count += 1
            last = position
            if build:
                wall_bits = _get64(base + body + 9)
                memcpy(&wall, &wall_bits, 8)
                names = PyUnicode_DecodeUTF8(<const char *>base + at_names, names_size, NULL)
                events.append(
                    _tuple_new(
                        event_type,
                        (
                            position,
                            PyUnicode_DecodeUTF8(<const char *>base + at_id, id_size, NULL),
                            tuple(names.split("\n")) if "\n" in names else (names,),
                            PyBytes_FromStringAndSize(
                                <const char *>base + at_frame, end - at_frame
                            ),
                            wall,
                            base[body + 17] == 1,
                        ),
                    )
                )
        else:
            others.append((offset, kind, data[body:end]))
        offset = end
    return events, others, count, last, offset, damage, last_kind


cdef class Tally:
    """A topic's count in the data directory (see the twin's module doc)."""

    cdef public int64_t count
    cdef public double wall
    cdef public int64_t segment

    def __cinit__(self):
        self.count = 0
        self.wall = 0.0
        self.segment = -1

    def __init__(self, count=0, wall=0.0, segment=-1):
        self.count = count  # (tally_topics makes its own without this: __cinit__'s)
        self.wall = wall
        self.segment = segment

    def __repr__(self):
        return f"Tally(count={self.count}, wall={self.wall!r}, segment={self.segment})"


def tally_topics(items, double wall, dict tallies, dict live, int64_t segment):
    """Count each topic of ``items`` (objects with ``topics``) once more in its
    ``tallies`` entry at ``wall``; a topic first counted in ``segment`` joins its
    ``live`` topics (see the twin's module doc)."""
    cdef object item, name
    cdef PyObject* found
    cdef Tally tally
    for item in items:
        for name in item.topics:
            found = PyDict_GetItem(tallies, name)
            if found == NULL:
                tally = Tally.__new__(Tally)
                PyDict_SetItem(tallies, name, tally)
            else:
                tally = <Tally?>found
            tally.count += 1
            tally.wall = wall
            if tally.segment != segment:
                tally.segment = segment
                PyDict_SetItem(live, name, tally)
