# cython: language_level=3
"""Cython SSE frame encoder; the pure-Python twin is ``sse_fast/_core/encoder_py.py``.

Each frame is built in two passes over the field values: the first computes the
exact size, the second writes into one freshly allocated ``bytes`` object, so a
frame costs one allocation whatever its number of lines. Line ends inside
``data`` and ``comment`` are found with ``memchr`` (the next CR and the next LF
are each searched once and remembered, so the scan stays linear).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.stdio cimport snprintf
from libc.string cimport memchr, memcpy

from _scan cimport (
    LineScan,
    PyUnicode_AsUTF8AndSize,
    PyUnicode_AsUTF8String,
    PyUnicode_IS_ASCII,
    next_line_end,
    scan_start,
)

import orjson

from sse_fast._core.errors import EncodeError

__all__ = ["ID_FIRST_ORDER", "ORDER", "Event", "encode", "encode_many", "encode_sequenced"]

cdef object _orjson_dumps = orjson.dumps


cdef Py_ssize_t _utf8_error_at(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Offset of the first byte that breaks UTF-8 validity, or -1 if valid."""
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    cdef unsigned char c, c1
    while i < n:
        if i + 8 <= n:
            memcpy(&word, s + i, 8)
            if (word & 0x8080808080808080ULL) == 0:
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:
            return i
        elif c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return i
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return i
            c1 = s[i + 1]
            if c == 0xE0:
                if c1 < 0xA0 or c1 > 0xBF:
                    return i
            elif c == 0xED:
                if c1 < 0x80 or c1 > 0x9F:
                    return i
            elif (c1 & 0xC0) != 0x80:
                return i
            if (s[i + 2] & 0xC0) != 0x80:
                return i
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return i
            c1 = s[i + 1]
            if c == 0xF0:
                if c1 < 0x90 or c1 > 0xBF:
                    return i
            elif c == 0xF4:
                if c1 < 0x80 or c1 > 0x8F:
                    return i
            elif (c1 & 0xC0) != 0x80:
                return i
            if (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return i
            i += 4
        else:
            return i
    return -1


def utf8_error_at(bytes raw not None):
    """Offset of the first invalid UTF-8 byte in ``raw``, or -1 (exposed for tests)."""
    return _utf8_error_at(<const unsigned char*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))


cdef Py_ssize_t _lines(
    const char* src, Py_ssize_t n, const char* prefix, Py_ssize_t plen,
    const char* sep, Py_ssize_t sep_n, char* out
) noexcept nogil:
    """Write ``prefix + line + sep`` for each CR/LF/CRLF-separated line of src.

    With ``out == NULL`` only the size is computed. Returns the size.
    """
    cdef Py_ssize_t pos = 0, end, total = 0
    cdef LineScan scan
    cdef const char* hit
    scan_start(&scan, src, n)
    while True:
        hit = next_line_end(&scan, src, pos, n)
        end = (hit - src) if hit != NULL else n
        if out != NULL:
            memcpy(out + total, prefix, plen)
            memcpy(out + total + plen, src + pos, end - pos)
            memcpy(out + total + plen + end - pos, sep, sep_n)
        total += plen + (end - pos) + sep_n
        if hit == NULL:
            return total
        if hit[0] == b'\r' and end + 1 < n and src[end + 1] == b'\n':
            pos = end + 2
        else:
            pos = end + 1


cdef inline bint _has_any(const char* p, Py_ssize_t n, bint nul) noexcept nogil:
    """True when p[:n] holds CR or LF (or NUL, if asked): one pass, no calls."""
    cdef Py_ssize_t i
    cdef char c
    if n > 64:
        return (memchr(p, b'\r', n) != NULL or memchr(p, b'\n', n) != NULL
                or (nul and memchr(p, 0, n) != NULL))
    for i in range(n):
        c = p[i]
        if c == b'\r' or c == b'\n' or (nul and c == 0):
            return True
    return False


cdef inline const char* _utf8(str field, object value, Py_ssize_t* size) except NULL:
    try:
        return PyUnicode_AsUTF8AndSize(value, size)
    except UnicodeEncodeError as exc:
        raise EncodeError(
            field, f"not encodable as UTF-8 (lone surrogate at index {exc.start})"
        ) from None


# The two field orders a frame can be written in: ours, and the one of sse-starlette
# and aiohttp-sse (their drop-ins write the same bytes as they do).
ORDER = "comment,event,id,retry,data"
ID_FIRST_ORDER = "comment,id,event,data,retry"


cdef inline void _field(
    char* w, Py_ssize_t* pos, const char* name, Py_ssize_t name_n,
    const char* value, Py_ssize_t value_n, const char* sep, Py_ssize_t sep_n
) noexcept nogil:
    memcpy(w + pos[0], name, name_n)
    memcpy(w + pos[0] + name_n, value, value_n)
    memcpy(w + pos[0] + name_n + value_n, sep, sep_n)
    pos[0] += name_n + value_n + sep_n


cdef bytes _encode(
    object data, object event, object id, object retry, object comment,
    const char* sep, Py_ssize_t sep_n, bint id_first
):
    cdef const char* comment_ptr = NULL
    cdef const char* event_ptr = NULL
    cdef const char* id_ptr = NULL
    cdef const char* data_ptr = NULL
    cdef const char* retry_ptr = NULL
    cdef Py_ssize_t comment_n = 0, event_n = 0, id_n = 0, data_n = 0, retry_n = 0
    cdef Py_ssize_t total = sep_n, pos, bad
    cdef bint data_lines = False
    cdef bint is_json
    cdef bint single_line = False
    cdef char retry_buf[32]
    cdef long long retry_value
    cdef object id_text = None, data_owner = None, retry_text = None
    cdef bytes out
    cdef char* w

    if comment is not None:
        if not isinstance(comment, str):
            raise EncodeError("comment", f"must be str, not {type(comment).__name__}")
        comment_ptr = _utf8("comment", comment, &comment_n)
        total += _lines(comment_ptr, comment_n, b": ", 2, sep, sep_n, NULL)

    if event is not None:
        if not isinstance(event, str):
            raise EncodeError("event", f"must be str, not {type(event).__name__}")
        event_ptr = _utf8("event", event, &event_n)
        if _has_any(event_ptr, event_n, False):
            raise EncodeError("event", "must not contain CR or LF (it would end the field early)")
        total += 7 + event_n + sep_n

    if id is not None:
        if type(id) is str or isinstance(id, str):
            id_text = id
        elif isinstance(id, int) and not isinstance(id, bool):
            id_text = str(id)
        else:
            raise EncodeError("id", f"must be str or int, not {type(id).__name__}")
        id_ptr = _utf8("id", id_text, &id_n)
        if _has_any(id_ptr, id_n, True):
            if memchr(id_ptr, 0, id_n) != NULL and not _has_any(id_ptr, id_n, False):
                raise EncodeError("id", "must not contain NUL (clients ignore such ids)")
            raise EncodeError("id", "must not contain CR or LF (it would end the field early)")
        total += 4 + id_n + sep_n

    if retry is not None:
        if not isinstance(retry, int) or isinstance(retry, bool):
            raise EncodeError(
                "retry", f"must be a non-negative int (ms), not {type(retry).__name__}"
            )
        if retry < 0:
            raise EncodeError("retry", f"must be a non-negative int (ms), got {retry}")
        try:
            retry_value = retry
            retry_n = snprintf(retry_buf, sizeof(retry_buf), "%lld", retry_value)
        except OverflowError:
            retry_text = str(retry).encode("ascii")
            retry_n = len(retry_text)
        total += 7 + retry_n + sep_n

    if data is not None:
        # dict and list first: the common JSON payloads skip the other checks
        is_json = type(data) is dict or type(data) is list
        if not is_json:
            if isinstance(data, str):
                if PyUnicode_IS_ASCII(data):  # the str's own buffer: no copy, nothing cached
                    data_ptr = _utf8("data", data, &data_n)
                else:  # a temporary UTF-8 copy, not cached on the (possibly large) str
                    try:
                        data_owner = PyUnicode_AsUTF8String(data)
                    except UnicodeEncodeError as exc:
                        raise EncodeError(
                            "data", f"not encodable as UTF-8 (lone surrogate at index {exc.start})"
                        ) from None
                    data_ptr = PyBytes_AS_STRING(data_owner)
                    data_n = PyBytes_GET_SIZE(data_owner)
                data_lines = True
            elif type(data) is bytes:
                data_owner = data
            elif isinstance(data, (bytes, bytearray, memoryview)):
                data_owner = bytes(data)
            else:
                is_json = True
        if is_json:
            try:
                data_owner = _orjson_dumps(data)
            except TypeError as exc:
                raise EncodeError(
                    "data", f"cannot serialise {type(data).__name__} as JSON: {exc}"
                ) from None
            # Checked and split like bytes: an orjson.Fragment can carry raw CR/LF
            # or invalid UTF-8, which must not end the frame or reach the wire.
        if data_owner is not None and not data_lines and data_ptr == NULL:
            data_ptr = PyBytes_AS_STRING(data_owner)
            data_n = PyBytes_GET_SIZE(data_owner)
            bad = _utf8_error_at(<const unsigned char*>data_ptr, data_n)
            if bad >= 0:
                raise EncodeError(
                    "data", f"bytes are not valid UTF-8 (invalid byte at offset {bad})"
                )
            data_lines = True
        if _has_any(data_ptr, data_n, False):
            total += _lines(data_ptr, data_n, b"data: ", 6, sep, sep_n, NULL)
        else:  # one line: no second scan when writing
            data_lines = False
            single_line = True
            total += 6 + data_n + sep_n

    if total == sep_n:
        raise EncodeError("frame", "nothing to encode: give data, event, id, retry or comment")

    if retry is not None:
        if retry_text is None:
            retry_ptr = retry_buf
        else:
            retry_ptr = PyBytes_AS_STRING(retry_text)
    out = PyBytes_FromStringAndSize(NULL, total)
    w = PyBytes_AS_STRING(out)
    pos = 0
    if comment_ptr != NULL:
        pos += _lines(comment_ptr, comment_n, b": ", 2, sep, sep_n, w + pos)
    if id_first and id_ptr != NULL:
        _field(w, &pos, b"id: ", 4, id_ptr, id_n, sep, sep_n)
    if event_ptr != NULL:
        _field(w, &pos, b"event: ", 7, event_ptr, event_n, sep, sep_n)
    if not id_first:
        if id_ptr != NULL:
            _field(w, &pos, b"id: ", 4, id_ptr, id_n, sep, sep_n)
        if retry is not None:
            _field(w, &pos, b"retry: ", 7, retry_ptr, retry_n, sep, sep_n)
    if data_lines:
        pos += _lines(data_ptr, data_n, b"data: ", 6, sep, sep_n, w + pos)
    elif single_line:
        _field(w, &pos, b"data: ", 6, data_ptr, data_n, sep, sep_n)
    if id_first and retry is not None:
        _field(w, &pos, b"retry: ", 7, retry_ptr, retry_n, sep, sep_n)
    memcpy(w + pos, sep, sep_n)
    return out


def encode(data=None, *, event=None, id=None, retry=None, comment=None, sep="\n", order=ORDER):
    """Encode one SSE frame.

    ``data`` may be ``str``, UTF-8 ``bytes`` or anything orjson serialises
    (dict, list, dataclass, numbers, ...); ``None`` writes no data line, so a
    frame with only ``comment``, ``id`` or ``retry`` is possible. ``sep`` ends
    every line (``"\\n"``, ``"\\r\\n"`` or ``"\\r"``); ``order`` is the order of
    the fields, ``ORDER`` (ours) or ``ID_FIRST_ORDER`` (sse-starlette's and
    aiohttp-sse's).
    """
    if sep is "\n" and order is ORDER:  # the common call: no comparisons
        return _encode(data, event, id, retry, comment, b"\n", 1, False)
    return _encode(data, event, id, retry, comment, _sep(sep), len(sep), _id_first(order))


cdef const char* _sep(object sep) except NULL:
    if sep == "\n":
        return b"\n"
    if sep == "\r\n":
        return b"\r\n"
    if sep == "\r":
        return b"\r"
    raise EncodeError("sep", f"must be one of \\n, \\r\\n, \\r; got {sep!r}")


cdef bint _id_first(object order) except -1:
    if order == ORDER:
        return False
    if order == ID_FIRST_ORDER:
        return True
    raise EncodeError("order", f"must be {ORDER!r} or {ID_FIRST_ORDER!r}; got {order!r}")


# The signature is written by hand: Cython 3.3's embedsignature puts the ``*`` of
# ``__init__`` one parameter too late (``Event(data=None, event=None, *, ...)``).
@cython.embedsignature(False)
cdef class Event:
    """Event(data=None, *, event=None, id=None, retry=None, comment=None)

    An immutable SSE event; the frame is encoded (and validated) on creation."""

    cdef readonly object data
    cdef readonly object event
    cdef readonly object id
    cdef readonly object retry
    cdef readonly object comment
    cdef bytes _frame

    def __init__(self, data=None, *, event=None, id=None, retry=None, comment=None):
        self._frame = _encode(data, event, id, retry, comment, b"\n", 1, False)
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.comment = comment

    cpdef bytes encode(self):
        """The frame's bytes (computed once, when the event was created)."""
        return self._frame

    def _fields(self):
        return (self.data, self.event, self.id, self.retry, self.comment)

    def __eq__(self, other):
        if not isinstance(other, Event):
            return NotImplemented
        # equal when they put the same bytes on the wire (consistent with the hash)
        return self._frame == (<Event>other)._frame

    def __hash__(self):
        return hash(self._frame)

    def __repr__(self):
        names = ("data", "event", "id", "retry", "comment")
        shown = ", ".join(
            f"{n}={v!r}" for n, v in zip(names, self._fields()) if v is not None
        )
        return f"Event({shown})"

    def __reduce__(self):
        return (_rebuild_event, self._fields())


def _rebuild_event(data, event, id, retry, comment):
    return Event(data, event=event, id=id, retry=retry, comment=comment)


def encode_many(events):
    """Concatenate the frames of ``events`` into one buffer (one write)."""
    cdef list frames = []
    cdef Py_ssize_t index = 0
    for item in events:
        if not isinstance(item, Event):
            raise TypeError(
                f"encode_many() expects Event objects, got {type(item).__name__} at index {index}"
            )
        frames.append((<Event>item)._frame)
        index += 1
    return b"".join(frames)


cdef object _tuple_new = tuple.__new__


def encode_sequenced(requests, first, accepted_at, item_type):
    """Each of ``requests`` (objects with ``topics``, ``data``, ``event``, ``id`` and
    ``retry``) encoded once, at positions ``first`` on, under its id: the publisher's,
    or ``str(position)`` where it gave none. Returns ``item_type`` tuples
    ``(position, id, topics, frame, accepted_at)``; raises the first ``EncodeError``
    before anything is returned (a batch is encoded whole or not at all)."""
    cdef list out = []
    cdef int64_t start = first
    cdef Py_ssize_t offset = 0
    cdef object request, event_id, position
    for request in requests:
        position = start + offset
        event_id = request.id
        if event_id is None:
            event_id = str(position)
        out.append(_tuple_new(item_type, (
            position,
            event_id,
            request.topics,
            _encode(request.data, request.event, event_id, request.retry, None, b"\n", 1, False),
            accepted_at,
        )))
        offset += 1
    return out
