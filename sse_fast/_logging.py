"""The log of every process of a server: one format, set up in one place.

``sse-fast serve`` sets it up as it starts (``_compose.serve``), and each worker as
its app is made (``app.create_app``: Granian's workers are processes of their own)."""

from __future__ import annotations

import logging

__all__ = ["FORMAT", "configure"]

#: each line: when, how grave, which logger, which process
FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"


def configure(level: str) -> None:
    """Log at ``level`` (``--log-level``) to stderr, in ``FORMAT``."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
