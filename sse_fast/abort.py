"""Cutting a client's connection for real, under any ASGI server in this process.

Theory of operation
-------------------
* Why. A stream the server ends (lagged, stalled, token expired, draining)
  gets a final frame and the end of its body. A client that reads receives
  them and the connection ends. A client that does *not* read never receives
  them: Granian (and uvicorn, hypercorn) then hold the socket and the
  megabytes queued for it for as long as the client keeps the TCP connection
  open, whatever the app does. Returning, raising or ending the body does not
  close it (measured, Granian 2.8.7), and ASGI has no "abort" message.
* How. The connection is found by its address pair (the ``server`` and
  ``client`` of the ASGI scope) among this process's socket descriptors, and
  through a duplicate descriptor it gets ``SO_LINGER`` 0 and
  ``shutdown(SHUT_RDWR)``. The server's own next poll sees the connection
  hung up, fails its write and closes its descriptor; with linger 0 the kernel
  answers with a reset and frees the socket and its buffers at once. The
  server keeps ownership of its descriptor: we never close it, so a number it
  reuses later cannot be hit by mistake, and the address pair is checked on
  the duplicate itself, so the socket cut is the one that was matched.
* Cost. One pass over ``/proc/self/fd`` (a few microseconds per descriptor),
  in a worker thread so the event loop keeps serving; every cut requested in
  the same loop iteration shares one pass.
* Limits. Only TCP connections that carry one stream (HTTP/1.x): an HTTP/2
  connection multiplexes other streams and is never cut; its stream only
  ends. Linux (``/proc/self/fd``), or any system with ``/dev/fd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Iterable, Mapping
from typing import Any

Address = tuple[str, int]
ConnectionKey = tuple[Address, Address]  # (server address, client address)

log = logging.getLogger("sse_fast")

_LINGER_ZERO = struct.pack("ii", 1, 0)
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def _address(value: Any) -> Address | None:
    if not value or len(value) < 2:
        return None
    host = str(value[0])
    if host.startswith("::ffff:") and "." in host:  # IPv4-mapped IPv6
        host = host[7:]
    try:
        return host, int(value[1])
    except (TypeError, ValueError):
        return None


def connection_key(scope: Mapping[str, Any]) -> ConnectionKey | None:
    """The address pair of the TCP connection carrying this HTTP/1.x request, or
    None when it cannot be cut alone (HTTP/2, Unix socket, no addresses)."""
    if scope.get("http_version", "1.1") not in ("1.0", "1.1"):
        return None
    server = _address(scope.get("server"))
    client = _address(scope.get("client"))
    if server is None or client is None:
        return None
    return server, client


def abort_connections(wanted: Iterable[ConnectionKey]) -> set[ConnectionKey]:
    """Reset every TCP connection of this process whose address pair is in
    ``wanted``; return the pairs found. Blocking (a pass over the descriptors)."""
    remaining = set(wanted)
    found: set[ConnectionKey] = set()
    fd_dir = next((d for d in _FD_DIRS if os.path.isdir(d)), None)
    if not remaining or fd_dir is None:
        return found
    for name in os.listdir(fd_dir):
        if not remaining:
            break
        try:
            if not os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                continue
            duplicate = os.dup(int(name))
        except (OSError, ValueError):
            continue
        try:
            sock = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            continue
        with sock:
            if sock.type != socket.SOCK_STREAM or sock.family not in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                continue
            try:
                key = (_address(sock.getsockname()), _address(sock.getpeername()))
            except OSError:
                continue
            if key not in remaining:
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
                sock.shutdown(socket.SHUT_RDWR)
                found.add(key)
                remaining.discard(key)
    return found


class Aborter:
    """Batches connection cuts: every ``abort`` of one loop iteration shares one
    pass over the descriptors, run in a worker thread."""

    def __init__(self) -> None:
        self._batch: dict[ConnectionKey, list[asyncio.Future[bool]]] = {}

    def abort(self, key: ConnectionKey) -> asyncio.Future[bool]:
        """Cut the connection ``key``; the future says whether it was found."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._run)
        self._batch.setdefault(key, []).append(future)
        return future

    def _run(self) -> None:
        batch, self._batch = self._batch, {}
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, abort_connections, list(batch))

        def done(job: asyncio.Future[set[ConnectionKey]]) -> None:
            found: set[ConnectionKey] = set()
            if job.cancelled():
                log.warning("cutting %d connection(s) was cancelled", len(batch))
            elif job.exception() is not None:
                log.error("cutting %d connection(s) failed", len(batch), exc_info=job.exception())
            else:
                found = job.result()
            for key, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(key in found)

        job.add_done_callback(done)
