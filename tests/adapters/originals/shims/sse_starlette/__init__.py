"""Shim: the name ``sse_starlette`` for ``sse_fast.starlette``, a pure rename.

Nothing is implemented here. The top level re-exports what sse-starlette 3.7.0's
``__init__`` exports (``EventSourceResponse``, ``ServerSentEvent``,
``JSONServerSentEvent``) from ``sse_fast.starlette``; any other attribute is looked up
on ``sse_fast.starlette`` (so a name sse_fast lacks raises, and the test that needs it
fails). ``sse_starlette.sse`` and ``sse_starlette.event`` ARE ``sse_fast.starlette.sse``
and ``sse_fast.starlette.event`` (see sse.py, event.py). A test run checks
``sse_starlette.__file__`` is this file.
"""

import sse_fast.starlette as _target
from sse_fast.starlette import EventSourceResponse, JSONServerSentEvent, ServerSentEvent

__all__ = ["EventSourceResponse", "JSONServerSentEvent", "ServerSentEvent"]
SHIM_OF = "sse_fast.starlette"


def __getattr__(name: str):
    return getattr(_target, name)
