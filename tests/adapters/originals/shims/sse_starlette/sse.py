"""Shim: ``sse_starlette.sse`` is ``sse_fast.starlette.sse`` (the module object
itself): ``from sse_starlette.sse import X`` raises ImportError exactly when
``sse_fast.starlette.sse`` has no ``X``; ``monkeypatch.setattr("sse_starlette.sse.…")``
patches ``sse_fast.starlette.sse``.
"""

import sys

import sse_fast.starlette.sse

sys.modules[__name__] = sse_fast.starlette.sse
