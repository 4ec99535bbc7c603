# The Cython ring's C-level declaration, shared with the modules that cimport it
# (topic_ext.pyx reads a topic's ring without a Python call); the implementation
# is src_ext/ring_ext.pyx, the theory of operation sse_fast/_core/ring_py.py.
from libc.stdint cimport int64_t


cdef class Ring:
    cdef readonly Py_ssize_t max_frames
    cdef readonly Py_ssize_t max_bytes
    cdef readonly int64_t head
    cdef readonly Py_ssize_t nbytes
    cdef readonly int64_t evicted
    cdef Py_ssize_t _len
    cdef Py_ssize_t _capacity
    cdef list _frames
    cdef list _ids  # None until the first frame with an id
    cdef dict _index  # None until then too
    cdef int64_t* _cumulative
    cdef int64_t _total

    cpdef int64_t cursor(self)
    cpdef int64_t publish(self, frame, event_id=*) except -1
    cdef int _grow(self) except -1
    cdef int _evict_oldest(self) except -1
    cdef int _check_cursor(self, object cursor) except -1
    cdef object _read(self, int64_t c)
