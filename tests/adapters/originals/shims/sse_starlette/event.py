"""Shim: ``sse_starlette.event`` is ``sse_fast.starlette.event`` (the module object
itself): ``from sse_starlette.event import X`` raises ImportError exactly when
``sse_fast.starlette.event`` has no ``X``; ``monkeypatch.setattr("sse_starlette.event.…")``
patches ``sse_fast.starlette.event``.
"""

import sys

import sse_fast.starlette.event

sys.modules[__name__] = sse_fast.starlette.event
