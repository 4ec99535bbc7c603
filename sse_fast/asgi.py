"""ASGI types, defined once for the hub, the app and the adapters.

``Send`` returns ``Awaitable[object]``: the hub looks at what ``send`` returns
(Granian's eager send hands back an already-finished awaitable; see
``hub/server.py``), so it is typed as "something to await", not a coroutine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[Any]]
Headers = list[tuple[bytes, bytes]]

__all__ = ["Headers", "Message", "Receive", "Scope", "Send"]
