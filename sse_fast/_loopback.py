"""The loopback address the test servers listen on, and a free port of it
(``sse_fast.testing`` and ``sse_fast._redis_servers``)."""

from __future__ import annotations

import socket

__all__ = ["HOST", "free_port"]

#: the loopback address every server here listens on
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port of ``HOST`` free now (the kernel picks it; another process may take it before it
    is used)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
