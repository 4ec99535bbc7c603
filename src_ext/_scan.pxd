# Shared by the encoder and the parser: the C declarations both use, and the scan
# for the next line end. Only inline functions and declarations: no module of its own.

from libc.string cimport memchr


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    bint PyUnicode_IS_ASCII(object s)
    object PyUnicode_AsUTF8String(object s)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)


cdef struct LineScan:
    # the next LF / CR found at or after the last scan position (NULL: none left)
    const char* lf
    const char* cr


cdef inline void scan_start(LineScan* scan, const char* p, Py_ssize_t n) noexcept nogil:
    scan.lf = <const char*>memchr(p, b'\n', n)
    scan.cr = <const char*>memchr(p, b'\r', n)


cdef inline const char* next_line_end(
    LineScan* scan, const char* p, Py_ssize_t pos, Py_ssize_t n
) noexcept nogil:
    """The first CR or LF at or after ``p + pos`` in ``p[:n]``, or NULL.

    Each memchr hit is kept until the position passes it, so a text of many
    lines costs one pass of memchr per character kind, not one per line.
    """
    if scan.lf != NULL and scan.lf < p + pos:
        scan.lf = <const char*>memchr(p + pos, b'\n', n - pos)
    if scan.cr != NULL and scan.cr < p + pos:
        scan.cr = <const char*>memchr(p + pos, b'\r', n - pos)
    if scan.lf == NULL:
        return scan.cr
    if scan.cr == NULL or scan.lf < scan.cr:
        return scan.lf
    return scan.cr
