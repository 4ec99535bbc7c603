"""An eager, finished ASGI ``send`` for benches that drive the hub in one process.

Granian's eager ``send`` hands the bytes over at call time and returns an
already-finished awaitable whose type is named ``PyEmptyAwaitable``; the hub
learns that type from a stream's first send and drops such results without an
await. ``eager_send`` returns one, so the hub's own cost is what a bench measures.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

__all__ = ["DONE", "PyEmptyAwaitable", "eager_send"]


class PyEmptyAwaitable:  # the name the hub recognises as an eager, finished send
    def __await__(self) -> Any:
        return
        yield


DONE = PyEmptyAwaitable()


def eager_send(message: MutableMapping[str, Any]) -> PyEmptyAwaitable:
    """A send that took ``message`` at once (the bytes are dropped)."""
    return DONE
