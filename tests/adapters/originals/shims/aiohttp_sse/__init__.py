"""Shim: the name ``aiohttp_sse`` for ``sse_fast.aiohttp``, a pure rename.

Nothing is implemented here. It re-exports what aiohttp-sse 3.0 exports
(``EventSourceResponse``, ``sse_response``) from ``sse_fast.aiohttp``; any other
attribute is looked up on ``sse_fast.aiohttp`` (a name it lacks raises). A test run
checks ``aiohttp_sse.__file__`` is this file.
"""

import sse_fast.aiohttp as _target
from sse_fast.aiohttp import EventSourceResponse, sse_response

__all__ = ["EventSourceResponse", "sse_response"]
SHIM_OF = "sse_fast.aiohttp"


def __getattr__(name: str):
    return getattr(_target, name)
