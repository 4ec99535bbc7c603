# cython: language_level=3
"""Cython incremental SSE parser; the pure-Python twin (``sse_fast/_core/parser_py.py``)
documents the rules. Both must give identical events for any input.

Lines are processed in place from the fed chunk; only an unfinished line at the
end of a chunk is copied (to ``_pending``). Data and the event type accumulate
in growable C buffers; the decoded event type string is reused while it stays
the same, which is the common case.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memchr, memcmp, memcpy

from _scan cimport LineScan, PyUnicode_DecodeUTF8, next_line_end, scan_start

import sys

from sse_fast._core.errors import EventTooLarge, ParseError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "ParsedEvent", "Parser"]

DEFAULT_MAX_EVENT_SIZE = 4 * 1024 * 1024


cdef inline int _check_str(str name, object value) except -1:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return 0


cdef int _check_size_limit(str name, object value) except -1:
    """A positive int that fits a C ``Py_ssize_t`` (the pure twin checks the same)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= sys.maxsize:
        raise ValueError(f"{name} must be a positive int up to sys.maxsize, got {value!r}")
    return 0


cdef int _check_retry(object value) except -1:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"retry must be int (ms) or None, not {type(value).__name__}")
    if value is not None and value < 0:
        raise ValueError(f"retry must not be negative, got {value}")
    return 0


cdef int _check_last_event_id(object value) except -1:
    if not isinstance(value, str):
        raise TypeError(
            f"last_event_id must be str ('' when there is none), not {type(value).__name__}"
        )
    return 0


cdef struct Buffer:
    char* ptr
    Py_ssize_t size
    Py_ssize_t cap


cdef int _buf_append(Buffer* buf, const char* src, Py_ssize_t n) except -1:
    cdef Py_ssize_t need = buf.size + n
    cdef Py_ssize_t cap
    cdef char* grown
    if need > buf.cap:
        cap = buf.cap * 2 if buf.cap else 256
        while cap < need:
            cap *= 2
        grown = <char*>PyMem_Realloc(buf.ptr, cap)
        if grown == NULL:
            raise MemoryError()
        buf.ptr = grown
        buf.cap = cap
    if n:
        memcpy(buf.ptr + buf.size, src, n)
    buf.size = need
    return 0


cdef inline void _buf_shrink(Buffer* buf) noexcept:
    """Empty the buffer and give its memory back if it grew past 64 KiB."""
    buf.size = 0
    if buf.cap > 65536:
        PyMem_Free(buf.ptr)
        buf.ptr = NULL
        buf.cap = 0


cdef class ParsedEvent:
    """One dispatched event: ``event`` (type), ``data``, ``id`` (the last event
    id at dispatch), ``retry`` (set by a ``retry`` field in this event, or None)."""

    cdef readonly str event
    cdef readonly str data
    cdef readonly str id
    cdef readonly object retry

    def __init__(self, event, data, id, retry):
        _check_str("event", event)
        _check_str("data", data)
        _check_str("id", id)
        _check_retry(retry)
        self.event = <str>event
        self.data = <str>data
        self.id = <str>id
        self.retry = retry

    def __eq__(self, other):
        if not isinstance(other, ParsedEvent):
            return NotImplemented
        cdef ParsedEvent o = <ParsedEvent>other
        return (self.event, self.data, self.id, self.retry) == (o.event, o.data, o.id, o.retry)

    __hash__ = None

    def __repr__(self):
        return (
            f"ParsedEvent(event={self.event!r}, data={self.data!r}, "
            f"id={self.id!r}, retry={self.retry!r})"
        )


cdef str _MESSAGE = "message"


cdef class Parser:
    """Incremental SSE parser: ``feed(bytes) -> list[ParsedEvent]``, then ``close()``.

    ``last_event_id`` may be given to continue a previous connection's id (as
    a browser does on reconnect). ``retry`` holds the last reconnection delay
    the stream set (or None).
    """

    cdef readonly Py_ssize_t max_event_size
    cdef str _last_event_id
    cdef object _retry
    cdef str _id_buffer
    cdef Buffer _pending
    cdef Buffer _data
    cdef Buffer _type
    cdef bytes _type_cached_raw
    cdef str _type_cached
    cdef object _block_retry
    cdef bint _at_start
    cdef bint _skip_lf
    cdef bint _closed
    cdef object _failure

    def __cinit__(self):
        self._pending.ptr = NULL
        self._pending.size = self._pending.cap = 0
        self._data.ptr = NULL
        self._data.size = self._data.cap = 0
        self._type.ptr = NULL
        self._type.size = self._type.cap = 0

    def __init__(self, max_event_size=DEFAULT_MAX_EVENT_SIZE, last_event_id=""):
        _check_size_limit("max_event_size", max_event_size)
        _check_last_event_id(last_event_id)
        self.max_event_size = max_event_size
        self._last_event_id = <str>last_event_id
        self._retry = None
        self._id_buffer = <str>last_event_id
        self._type_cached_raw = b""
        self._type_cached = _MESSAGE
        self._block_retry = None
        self._at_start = True
        self._skip_lf = False
        self._closed = False
        self._failure = None

    def __dealloc__(self):
        PyMem_Free(self._pending.ptr)
        PyMem_Free(self._data.ptr)
        PyMem_Free(self._type.ptr)

    @property
    def last_event_id(self):
        """The id of the last event dispatched (or given at construction)."""
        return self._last_event_id

    @last_event_id.setter
    def last_event_id(self, value):
        _check_last_event_id(value)
        self._last_event_id = <str>value

    @last_event_id.deleter
    def last_event_id(self):  # as the pure twin's property without a deleter
        raise AttributeError("last_event_id cannot be deleted; set it to '' instead")

    @property
    def retry(self):
        """The last reconnection delay (ms) the stream set, or None."""
        return self._retry

    @retry.setter
    def retry(self, value):
        _check_retry(value)
        self._retry = value

    @retry.deleter
    def retry(self):
        raise AttributeError("retry cannot be deleted; set it to None instead")

    def __reduce__(self):
        raise TypeError(
            "a Parser cannot be pickled or copied: it holds one stream's unfinished state; "
            "start a new Parser(last_event_id=...) where the stream resumes"
        )

    def feed(self, chunk):
        """Parse more of the stream; return the events it completed."""
        cdef bytes raw
        cdef const char* p
        cdef Py_ssize_t n, pos = 0, end, used
        cdef LineScan scan
        cdef const char* hit
        cdef list events = []
        if self._closed:
            raise ParseError("feed() after close(): start a new Parser for a new stream")
        if self._failure is not None:
            raise ParseError(f"parser failed earlier and cannot continue: {self._failure}")
        if type(chunk) is bytes:
            raw = chunk
        elif isinstance(chunk, (bytearray, memoryview)):
            raw = bytes(chunk)
        else:
            raise TypeError(f"feed() takes bytes, not {type(chunk).__name__}")
        p = PyBytes_AS_STRING(raw)
        n = PyBytes_GET_SIZE(raw)

        if self._at_start:
            # Up to 3 bytes that could still be a BOM wait in _pending.
            if self._pending.size + n < 3:
                _buf_append(&self._pending, p, n)
                if memcmp(self._pending.ptr, b"\xef\xbb\xbf", self._pending.size) == 0:
                    return events
                raw = PyBytes_FromStringAndSize(self._pending.ptr, self._pending.size)
            elif self._pending.size:
                _buf_append(&self._pending, p, n)
                raw = PyBytes_FromStringAndSize(self._pending.ptr, self._pending.size)
            self._pending.size = 0
            p = PyBytes_AS_STRING(raw)
            n = PyBytes_GET_SIZE(raw)
            self._at_start = False
            if n >= 3 and memcmp(p, b"\xef\xbb\xbf", 3) == 0:
                pos = 3

        if self._skip_lf and n > pos:
            self._skip_lf = False
            if p[pos] == b'\n':
                pos += 1

        scan_start(&scan, p + pos, n - pos)
        while True:
            hit = next_line_end(&scan, p, pos, n)
            if hit == NULL:
                break
            end = hit - p
            if self._pending.size:
                _buf_append(&self._pending, p + pos, end - pos)
                used = self._pending.size
                self._pending.size = 0
                self._line(self._pending.ptr, used, events)
                _buf_shrink(&self._pending)
            else:
                self._line(p + pos, end - pos, events)
            if hit[0] == b'\r':
                if end + 1 < n:
                    pos = end + 2 if p[end + 1] == b'\n' else end + 1
                else:
                    self._skip_lf = True
                    pos = end + 1
            else:
                pos = end + 1
        if pos < n:
            _buf_append(&self._pending, p + pos, n - pos)
            self._check_size(self._pending.size, events)
        return events

    def close(self):
        """End of stream: an unfinished event is discarded, as the spec says."""
        self._closed = True
        self._pending.size = 0
        self._data.size = 0
        self._type.size = 0
        _buf_shrink(&self._pending)
        _buf_shrink(&self._data)

    cdef int _check_size(self, Py_ssize_t line_size, list events) except -1:
        cdef Py_ssize_t size = self._data.size + self._type.size + line_size
        if size > self.max_event_size:
            error = EventTooLarge(size, self.max_event_size, list(events))
            self._failure = error
            self._pending.size = 0
            self._data.size = 0
            _buf_shrink(&self._pending)
            _buf_shrink(&self._data)
            raise error
        return 0

    cdef int _line(self, const char* line, Py_ssize_t n, list events) except -1:
        cdef const char* colon
        cdef Py_ssize_t name_n, value_start
        cdef const char* value
        cdef Py_ssize_t value_n, i
        cdef object number
        if n == 0:
            self._dispatch(events)
            return 0
        if self._data.size + self._type.size + n > self.max_event_size:
            self._check_size(n, events)  # every line counts, whole or in pieces
        if line[0] == b':':
            return 0
        colon = <const char*>memchr(line, b':', n)
        if colon == NULL:
            name_n = n
            value = line + n
            value_n = 0
        else:
            name_n = colon - line
            value_start = name_n + 1
            if value_start < n and line[value_start] == b' ':
                value_start += 1
            value = line + value_start
            value_n = n - value_start
        if name_n == 4 and memcmp(line, b"data", 4) == 0:
            _buf_append(&self._data, value, value_n)
            _buf_append(&self._data, b"\n", 1)
        elif name_n == 5 and memcmp(line, b"event", 5) == 0:
            self._type.size = 0
            _buf_append(&self._type, value, value_n)
        elif name_n == 2 and memcmp(line, b"id", 2) == 0:
            if memchr(value, 0, value_n) == NULL:
                self._id_buffer = PyUnicode_DecodeUTF8(value, value_n, "replace")
        elif name_n == 5 and memcmp(line, b"retry", 5) == 0:
            if value_n == 0:
                return 0
            for i in range(value_n):
                if value[i] < b'0' or value[i] > b'9':
                    return 0
            number = int(PyBytes_FromStringAndSize(value, value_n))
            self._retry = number
            self._block_retry = number
        return 0

    cdef int _dispatch(self, list events) except -1:
        cdef ParsedEvent event
        cdef str type_name
        self._last_event_id = self._id_buffer
        if self._data.size:
            if self._type.size == 0:
                type_name = _MESSAGE
            elif (
                self._type.size == PyBytes_GET_SIZE(self._type_cached_raw)
                and memcmp(self._type.ptr, PyBytes_AS_STRING(self._type_cached_raw),
                           self._type.size) == 0
            ):
                type_name = self._type_cached
            else:
                self._type_cached_raw = PyBytes_FromStringAndSize(self._type.ptr, self._type.size)
                self._type_cached = PyUnicode_DecodeUTF8(self._type.ptr, self._type.size,
                                                         "replace")
                type_name = self._type_cached
            event = ParsedEvent.__new__(ParsedEvent)
            event.event = type_name
            event.data = PyUnicode_DecodeUTF8(self._data.ptr, self._data.size - 1, "replace")
            event.id = self._last_event_id
            event.retry = self._block_retry
            events.append(event)
            _buf_shrink(&self._data)
        self._type.size = 0
        self._block_retry = None
        return 0
