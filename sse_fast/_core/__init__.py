"""The chooser: the Cython core or its pure-Python twins, one API.

The extension is used when every module of ``NATIVE_MODULES`` (``native.py``)
was built, the twins otherwise, never a mix; ``SSE_FAST_NO_EXTENSIONS=1`` (read
here and by ``setup.py``) selects the pure-Python twins. Every module of the
package takes the core from here, never from ``sse_fast/__init__.py``, so the
package's own modules import in any order.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from .errors import EncodeError, EventTooLarge, Lagged, ParseError
from .native import NATIVE_MODULES

#: whether ``SSE_FAST_NO_EXTENSIONS`` asks for the pure-Python twins
NO_EXTENSIONS: bool = os.environ.get("SSE_FAST_NO_EXTENSIONS", "") not in ("", "0")
#: Why the extension did not load (None when it did, or when it was not wanted).
EXTENSION_IMPORT_ERROR: ImportError | None = None

if TYPE_CHECKING or NO_EXTENSIONS:
    from .encoder_py import ID_FIRST_ORDER, ORDER, Event, encode, encode_many, encode_sequenced
    from .parser_py import DEFAULT_MAX_EVENT_SIZE, ParsedEvent, Parser
    from .publish_py import ack_lines, requests_of, requests_of_lines
    from .records_py import Tally, pack_events, scan_records, tally_topics
    from .ring_py import Ring
    from .topic_py import FRAME_OVERHEAD, NO_HISTORY, Topic, TopicTable, send_each

    HAS_EXTENSIONS = False
else:
    try:
        for _name in NATIVE_MODULES:  # the whole list: a module added there must load too
            importlib.import_module(f"{__package__}.{_name}_ext")
        from .encoder_ext import ID_FIRST_ORDER, ORDER, Event, encode, encode_many, encode_sequenced
        from .parser_ext import DEFAULT_MAX_EVENT_SIZE, ParsedEvent, Parser
        from .publish_ext import ack_lines, requests_of, requests_of_lines
        from .records_ext import Tally, pack_events, scan_records, tally_topics
        from .ring_ext import Ring
        from .topic_ext import FRAME_OVERHEAD, NO_HISTORY, Topic, TopicTable, send_each
    except ImportError as exc:  # not built (e.g. a source checkout without `pip install`)
        EXTENSION_IMPORT_ERROR = exc
        from .encoder_py import ID_FIRST_ORDER, ORDER, Event, encode, encode_many, encode_sequenced
        from .parser_py import DEFAULT_MAX_EVENT_SIZE, ParsedEvent, Parser
        from .publish_py import ack_lines, requests_of, requests_of_lines
        from .records_py import Tally, pack_events, scan_records, tally_topics
        from .ring_py import Ring
        from .topic_py import FRAME_OVERHEAD, NO_HISTORY, Topic, TopicTable, send_each

        HAS_EXTENSIONS = False
    else:
        #: whether the Cython core is in use (False: the pure-Python twins)
        HAS_EXTENSIONS = True

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "EXTENSION_IMPORT_ERROR",
    "FRAME_OVERHEAD",
    "HAS_EXTENSIONS",
    "ID_FIRST_ORDER",
    "NO_EXTENSIONS",
    "NO_HISTORY",
    "ORDER",
    "EncodeError",
    "Event",
    "EventTooLarge",
    "Lagged",
    "ParseError",
    "ParsedEvent",
    "Parser",
    "Ring",
    "Tally",
    "Topic",
    "TopicTable",
    "ack_lines",
    "encode",
    "encode_many",
    "encode_sequenced",
    "pack_events",
    "requests_of",
    "requests_of_lines",
    "scan_records",
    "send_each",
    "tally_topics",
]
