"""sse_fast: a native-accelerated Server-Sent Events core and notification edge.

The core (encoder, parser, ring) comes in two implementations with one API: a
Cython extension and a pure-Python twin, chosen in ``_core/__init__.py``
(``SSE_FAST_NO_EXTENSIONS=1`` selects the twins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core import (
    DEFAULT_MAX_EVENT_SIZE,
    EXTENSION_IMPORT_ERROR,
    HAS_EXTENSIONS,
    NO_EXTENSIONS,
    EncodeError,
    Event,
    EventTooLarge,
    Lagged,
    ParsedEvent,
    ParseError,
    Parser,
    Ring,
    encode,
    encode_many,
)
from .frames import (
    datastar_execute_script,
    datastar_patch_elements,
    datastar_patch_signals,
    datastar_redirect,
    datastar_remove_elements,
    heartbeat,
    htmx_fragment,
)

if TYPE_CHECKING:
    from .publisher import Publisher, PublishFailed, PublishStream

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "EXTENSION_IMPORT_ERROR",
    "HAS_EXTENSIONS",
    "NO_EXTENSIONS",
    "EncodeError",
    "Event",
    "EventTooLarge",
    "Lagged",
    "ParseError",
    "ParsedEvent",
    "Parser",
    "PublishFailed",
    "PublishStream",
    "Publisher",
    "Ring",
    "datastar_execute_script",
    "datastar_patch_elements",
    "datastar_patch_signals",
    "datastar_redirect",
    "datastar_remove_elements",
    "encode",
    "encode_many",
    "heartbeat",
    "htmx_fragment",
]


def __getattr__(name: str) -> Any:
    """The publishing client is loaded when first named: an embedder who only
    encodes events never loads it (nor its HTTP/1.1 client)."""
    if name in ("Publisher", "PublishFailed", "PublishStream"):
        from . import publisher

        return getattr(publisher, name)
    raise AttributeError(f"module 'sse_fast' has no attribute {name!r}")
