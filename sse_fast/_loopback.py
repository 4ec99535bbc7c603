"""The loopback address the test servers listen on, and a free port of it
(``sse_fast.testing`` and ``sse_fast._redis_servers``)."""

from __future__ import annotations

import errno
import random
import socket

__all__ = ["HOST", "free_port"]

#: the loopback address every server here listens on
HOST = "127.0.0.1"

#: the lowest port ``free_port`` gives: above the well-known and common service ports
LOWEST = 10_000

#: the kernel's choice of ports is not seeded by the tests (Hypothesis seeds ``random``)
_choose = random.SystemRandom()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's file, else its default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port of ``HOST`` free now, below the kernel's ephemeral range.

    A client's ``connect()`` takes its local port from that range: a port the kernel
    picked there (``bind(0)``) and gave back could be any new connection's before the
    server bound it (CI: a test's server found its port taken, beside thousands of
    client connections). Below it, only another ``bind`` can take it: a port is chosen
    at random and tried (another process may still take it before it is used); with
    no room below the range, the kernel picks."""
    low = _ephemeral_low()
    for _ in range(100 if low - LOWEST >= 1000 else 0):
        port = _choose.randrange(LOWEST, low)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            return port
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
