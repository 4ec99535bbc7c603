"""A port that refuses connections for as long as a test needs it.

``free_port()`` names a port free *now*: a test that uses it as "nobody listens
here" races every other test of the session, whose servers (a ``redis-server``
started a second later) may take the same port. ``refusing_port()`` binds the
port and never listens: a connect gets ECONNREFUSED, and no other process can
bind it (the socket does not set SO_REUSEADDR) until the block ends.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

__all__ = ["refusing_port"]


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port of ``host`` where connections are refused, held until the block ends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind((host, 0))
        yield held.getsockname()[1]
