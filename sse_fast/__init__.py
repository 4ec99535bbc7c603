"""sse_fast: a native-accelerated Server-Sent Events core and notification edge.

The core (encoder, parser, ring) comes in two implementations with one API: a
Cython extension and a pure-Python twin. The extension is used when it was
built; ``SSE_FAST_NO_EXTENSIONS=1`` (read here and by ``setup.py``) selects the
pure-Python twins.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._errors import EncodeError, EventTooLarge, Lagged, ParseError

__version__ = "0.1.0"

NO_EXTENSIONS: bool = os.environ.get("SSE_FAST_NO_EXTENSIONS", "") not in ("", "0")
#: Why the extension did not load (None when it did, or when it was not wanted).
EXTENSION_IMPORT_ERROR: ImportError | None = None

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._encoder_py import Event, encode, encode_many
    from ._parser_py import DEFAULT_MAX_EVENT_SIZE, ParsedEvent, Parser
    from ._ring_py import Ring

    HAS_EXTENSIONS = False
else:
    try:
        from ._encoder_ext import Event, encode, encode_many
        from ._parser_ext import DEFAULT_MAX_EVENT_SIZE, ParsedEvent, Parser
        from ._ring_ext import Ring
    except ImportError as exc:  # not built (e.g. a source checkout without `pip install`)
        EXTENSION_IMPORT_ERROR = exc
        from ._encoder_py import Event, encode, encode_many
        from ._parser_py import DEFAULT_MAX_EVENT_SIZE, ParsedEvent, Parser
        from ._ring_py import Ring

        HAS_EXTENSIONS = False
    else:
        HAS_EXTENSIONS = True

from .frames import (  # noqa: E402  (needs the chosen encoder)
    datastar_patch_elements,
    datastar_patch_signals,
    heartbeat,
    htmx_fragment,
)

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
    "Ring",
    "datastar_patch_elements",
    "datastar_patch_signals",
    "encode",
    "encode_many",
    "heartbeat",
    "htmx_fragment",
]
