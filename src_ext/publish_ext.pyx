# cython: language_level=3
"""Cython publish checker; the pure-Python twin is ``sse_fast/_core/publish_py.py``
(whose module docstring holds the theory of operation).

The checks are those of the twin, made on the decoded objects without a Python
call per field: dict lookups through the C API, a topic's characters against a
table, one-line strings scanned once.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Contains, PyDict_GetItem, PyDict_Size
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject
from cpython.set cimport PySet_Add, PySet_Contains
from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_READ_CHAR
from libc.stdio cimport snprintf
from libc.string cimport memcpy


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    bint PyUnicode_IS_ASCII(object text)

import orjson

from sse_fast._core.request import RESERVED_EVENT_PREFIX, TOPIC_CHARACTERS, PublishRequest

__all__ = ["ack_lines", "requests_of", "requests_of_lines"]

cdef object _Request = PublishRequest
cdef object _tuple_new = tuple.__new__
cdef object _loads = orjson.loads
cdef object _dumps = orjson.dumps
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef str _TOPIC = "topic"
cdef str _DATA = "data"
cdef str _EVENT = "event"
cdef str _ID = "id"
cdef str _RETRY = "retry"
cdef str _EVENTS = "events"
cdef str _RESERVED = RESERVED_EVENT_PREFIX

# the characters a topic name may have (ASCII; anything else is not valid)
cdef bint TOPIC_CHARS[128]


cdef void _fill_table(str allowed) noexcept:
    cdef Py_UCS4 ch
    cdef int i
    for i in range(128):
        TOPIC_CHARS[i] = False
    for ch in allowed:
        TOPIC_CHARS[<int>ch] = True


_fill_table(TOPIC_CHARACTERS)


cdef inline bint _valid_topic(object topic, Py_ssize_t max_length):
    if type(topic) is not str:
        return False
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(topic)
    if n == 0 or n > max_length:
        return False
    cdef Py_ssize_t i
    cdef Py_UCS4 ch
    for i in range(n):
        ch = PyUnicode_READ_CHAR(topic, i)
        if ch >= 128 or not TOPIC_CHARS[ch]:
            return False
    return True


cdef inline bint _one_line(str value, bint no_nul):
    """True when ``value`` has no CR or LF (nor NUL with ``no_nul``)."""
    cdef Py_ssize_t i
    cdef Py_UCS4 ch
    for i in range(PyUnicode_GET_LENGTH(value)):
        ch = PyUnicode_READ_CHAR(value, i)
        if ch == 13 or ch == 10 or (no_nul and ch == 0):
            return False
    return True


cdef inline object _get(dict raw, str key):
    """``raw[key]``, or None when it is missing."""
    cdef PyObject* value = PyDict_GetItem(raw, key)
    return <object>value if value != NULL else None


cdef object _request(dict raw, Py_ssize_t max_topic_length, Py_ssize_t max_id_length):
    """A PublishRequest, or None when ``raw`` is not a valid event of the common shape."""
    cdef object topic = _get(raw, _TOPIC)
    cdef object data = _get(raw, _DATA)
    if data is None or not _valid_topic(topic, max_topic_length):
        return None
    cdef Py_ssize_t size = PyDict_Size(raw)
    if size == 2:
        return _tuple_new(_Request, ((topic,), data, None, None, None))
    cdef Py_ssize_t known = (
        2 + PyDict_Contains(raw, _EVENT) + PyDict_Contains(raw, _ID) + PyDict_Contains(raw, _RETRY)
    )
    if known != size:
        return None  # a field outside topic, data, event, id, retry (e.g. topics)
    cdef object event = _get(raw, _EVENT)
    cdef object event_id = _get(raw, _ID)
    cdef object retry = _get(raw, _RETRY)
    if event is not None:
        if type(event) is not str or PyUnicode_GET_LENGTH(event) == 0:
            return None
        if not _one_line(<str>event, False) or (<str>event).startswith(_RESERVED):
            return None
    if event_id is not None:
        if type(event_id) is not str:
            return None
        size = PyUnicode_GET_LENGTH(event_id)
        if size == 0 or size > max_id_length or not _one_line(<str>event_id, True):
            return None
    if retry is not None and (type(retry) is not int or retry < 0):
        return None
    return _tuple_new(_Request, ((topic,), data, event, event_id, retry))


cdef bint _distinct_ids(list requests) except -1:
    """No id given to two of ``requests`` (a request's id is its field 3)."""
    cdef set seen = set()
    cdef object event_id
    for request in requests:
        event_id = (<tuple>request)[3]
        if event_id is not None:
            if PySet_Contains(seen, event_id):
                return False
            PySet_Add(seen, event_id)
    return True


cdef enum:
    # an ack is built in a buffer of this size when it fits (else by orjson, as the twin)
    ACK_SPACE = 2048


cdef bint _plain(object text, const char** data, Py_ssize_t* size) except -1:
    """Whether ``text`` (a str) goes into JSON as it is: printable ASCII without a
    quote or a backslash; then its bytes in ``data``, ``size``."""
    if type(text) is not str or not PyUnicode_IS_ASCII(text):
        return False
    data[0] = PyUnicode_AsUTF8AndSize(text, size)
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(size[0]):
        c = <unsigned char>data[0][i]
        if c < 0x20 or c > 0x7e or c == 34 or c == 92:
            return False
    return True


cdef object _ack_by_orjson(object number, list ids, Py_ssize_t start, Py_ssize_t count):
    """The twin's ack: ids JSON must escape, non-ASCII ones, a long ack, a huge number."""
    return b'{"line":%d,"ids":%b}\n' % (number, _dumps(ids[start : start + count]))


cdef object _ack(object number, list ids, Py_ssize_t start, Py_ssize_t count):
    """``{"line":<number>,"ids":[...]}\\n`` of ``ids[start:start + count]``."""
    cdef char buffer[ACK_SPACE]
    cdef Py_ssize_t used, size, i
    cdef const char* data
    cdef long long value
    if type(number) is not int:
        return _ack_by_orjson(number, ids, start, count)
    try:
        value = number
    except OverflowError:
        return _ack_by_orjson(number, ids, start, count)
    used = snprintf(buffer, 64, '{"line":%lld,"ids":[', value)
    for i in range(start, start + count):
        if not _plain(<object>PyList_GET_ITEM(ids, i), &data, &size) or used + size + 8 > ACK_SPACE:
            return _ack_by_orjson(number, ids, start, count)
        if i > start:
            buffer[used] = 44  # ,
            used += 1
        buffer[used] = 34  # "
        memcpy(buffer + used + 1, data, size)
        used += size + 2
        buffer[used - 1] = 34
    memcpy(buffer + used, b"]}\n", 3)
    return PyBytes_FromStringAndSize(buffer, used + 3)


def ack_lines(list lines, list ids):
    """Each line's ack into ``line[2]``, its ids the next ``len(line[1])`` of ``ids``
    (see the twin's module doc)."""
    cdef Py_ssize_t start = 0, count, total = 0, i
    cdef list line
    for i in range(PyList_GET_SIZE(lines)):
        total += len((<list?>PyList_GET_ITEM(lines, i))[1])
    if total != PyList_GET_SIZE(ids):
        raise ValueError("as many ids as the lines have requests are needed")
    for i in range(PyList_GET_SIZE(lines)):
        line = <list?>PyList_GET_ITEM(lines, i)
        count = len(line[1])
        line[2] = _ack(line[0], ids, start, count)
        start += count


def requests_of_lines(
    list lines,
    Py_ssize_t max_line,
    Py_ssize_t max_topic_length,
    Py_ssize_t max_id_length,
    Py_ssize_t max_events,
):
    """``requests_of`` for each of ``lines`` (publish bodies, one per line): its
    requests, or ``None`` where the line is longer than ``max_line`` bytes, not
    JSON (a blank line too), not of a common shape, has an invalid event, or
    gives one id to two events of a batch (see the twin's module doc)."""
    cdef list out = []
    cdef object line, document, requests
    cdef Py_ssize_t i
    for i in range(PyList_GET_SIZE(lines)):
        line = <object>PyList_GET_ITEM(lines, i)
        if len(line) > max_line:
            out.append(None)
            continue
        try:
            document = _loads(line)
        except _JSONDecodeError:
            out.append(None)
            continue
        requests = requests_of(document, max_topic_length, max_id_length, max_events)
        if (
            requests is not None
            and PyList_GET_SIZE(requests) > 1
            and not _distinct_ids(<list>requests)
        ):
            requests = None
        out.append(requests)
    return out


def requests_of(
    document,
    Py_ssize_t max_topic_length,
    Py_ssize_t max_id_length,
    Py_ssize_t max_events,
):
    """The publish requests of ``document`` (a decoded publish body) when it has a
    common shape and every event is valid; else ``None`` (see the module doc)."""
    if type(document) is not dict:
        return None
    cdef dict body = <dict>document
    cdef object request
    if not PyDict_Contains(body, _EVENTS):
        request = _request(body, max_topic_length, max_id_length)
        return None if request is None else [request]
    if PyDict_Size(body) != 1:
        return None
    cdef object events = _get(body, _EVENTS)
    if type(events) is not list:
        return None
    cdef Py_ssize_t count = PyList_GET_SIZE(events)
    if count == 0 or count > max_events:
        return None
    cdef list out = []
    cdef object raw
    cdef Py_ssize_t i
    for i in range(count):
        raw = <object>PyList_GET_ITEM(events, i)
        if type(raw) is not dict:
            return None
        request = _request(<dict>raw, max_topic_length, max_id_length)
        if request is None:
            return None
        out.append(request)
    return out
