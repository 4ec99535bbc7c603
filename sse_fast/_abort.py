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
* Cost. The kernel names the socket (its inode) of each address pair
  (sock_diag over netlink, one exact look-up each); one pass over
  ``/proc/self/fd`` (one ``readlink`` per descriptor) finds the descriptors of
  those inodes. It runs in a worker thread, one pass at a time, and every cut
  requested meanwhile shares the next pass (``benches/results/cut_cost.md``).
  Where sock_diag is not available, each socket descriptor is asked for its
  addresses instead (slower, same result).
* Vanished clients (``ensure_user_timeout``). A client whose network vanished
  sends no FIN or RST; the kernel retransmits for about 15 minutes before it
  gives up. The framework adapters' ``send_timeout`` becomes
  ``TCP_USER_TIMEOUT`` on the server's sockets, found the same way (by local
  address, in one pass): the listener, so that connections accepted later
  inherit it, and those already open.
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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "Aborter",
    "Address",
    "ConnectionKey",
    "abort_connections",
    "connection_key",
    "ensure_user_timeout",
    "set_user_timeout",
]

#: a socket address: (host, port)
Address = tuple[str, int]
#: a TCP connection: (server address, client address)
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


# sock_diag (netlink) asks the kernel for one TCP socket by its exact address pair.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSG_HEADER = struct.Struct("=IHHII")
_DIAG_REQUEST = struct.Struct("=BBBBI")  # family, protocol, extensions, pad, states
_DIAG_SOCKID = struct.Struct(">HH16s16sI")  # sport, dport, src, dst, interface
_NO_COOKIE = b"\xff" * 8
_INODE_OFFSET = _NLMSG_HEADER.size + 4 + _DIAG_SOCKID.size + 8 + 16


def _packed_address(family: int, host: str) -> bytes:
    return socket.inet_pton(family, host).ljust(16, b"\0")


def _socket_inodes(wanted: set[ConnectionKey]) -> set[str] | None:
    """``socket:[inode]`` names of the wanted connections (the server's side),
    asked of the kernel one by one (sock_diag); None when it cannot be asked."""
    try:
        diag = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except (OSError, AttributeError):
        return None
    inodes: set[str] = set()
    with diag:
        diag.settimeout(1.0)
        for sequence, ((host, port), (peer, peer_port)) in enumerate(wanted, start=1):
            if ":" in host:
                candidates = [(socket.AF_INET6, host, peer)]
            else:  # an IPv4 socket, or a dual-stack listener's IPv4-mapped one
                candidates = [
                    (socket.AF_INET, host, peer),
                    (socket.AF_INET6, "::ffff:" + host, "::ffff:" + peer),
                ]
            for family, host, peer in candidates:
                try:
                    sockid = _DIAG_SOCKID.pack(
                        port,
                        peer_port,
                        _packed_address(family, host),
                        _packed_address(family, peer),
                        0,
                    )
                except OSError:
                    break
                body = _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
                body += sockid + _NO_COOKIE
                header = _NLMSG_HEADER.pack(
                    _NLMSG_HEADER.size + len(body),
                    _SOCK_DIAG_BY_FAMILY,
                    _NLM_F_REQUEST,
                    sequence,
                    0,
                )
                try:
                    diag.send(header + body)
                    reply = diag.recv(65536)
                except OSError:
                    return None
                kind = _NLMSG_HEADER.unpack_from(reply)[1]
                if kind == _SOCK_DIAG_BY_FAMILY and len(reply) >= _INODE_OFFSET + 4:
                    (inode,) = struct.unpack_from("=I", reply, _INODE_OFFSET)
                    inodes.add(f"socket:[{inode}]")
                    break
                if kind != _NLMSG_ERROR:
                    return None
    return inodes


def _tcp_sockets(fd_dir: str, inodes: set[str] | None) -> Iterator[socket.socket]:
    """This process's TCP sockets (IPv4, IPv6), each through a duplicate descriptor,
    open only until the next one is asked for: those named in ``inodes``
    (``socket:[inode]``), or every socket when it is None. The server keeps its own
    descriptors: a number it reuses later cannot be hit by mistake."""
    for name in os.listdir(fd_dir):
        try:
            link = os.readlink(f"{fd_dir}/{name}")
            if not (link in inodes if inodes is not None else link.startswith("socket:")):
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
            if sock.type == socket.SOCK_STREAM and sock.family in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                yield sock


def _fd_dir() -> str | None:
    return next((d for d in _FD_DIRS if os.path.isdir(d)), None)


def abort_connections(wanted: Iterable[ConnectionKey]) -> set[ConnectionKey]:
    """Reset every TCP connection of this process whose address pair is in
    ``wanted``; return the pairs found. Blocking (a pass over the descriptors)."""
    remaining = set(wanted)
    found: set[ConnectionKey] = set()
    fd_dir = _fd_dir()
    if not remaining or fd_dir is None:
        return found
    inodes = _socket_inodes(remaining)
    if inodes is not None and not inodes:
        return found  # already gone
    # with the kernel's answer: only those sockets; without it: every socket
    for sock in _tcp_sockets(fd_dir, inodes):
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
        if not remaining:
            break
    return found


_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)


def set_user_timeout(server: Address, milliseconds: int) -> int:
    """Set ``TCP_USER_TIMEOUT`` on every TCP socket of this process with the local
    address ``server``: the listener (connections it accepts from now on inherit
    it) and the connections already open. Returns how many. Blocking (a pass over
    the descriptors)."""
    fd_dir = _fd_dir()
    if fd_dir is None or _TCP_USER_TIMEOUT is None:
        return 0
    done = 0
    host, port = server
    for sock in _tcp_sockets(fd_dir, None):
        try:
            local = _address(sock.getsockname())
        except OSError:
            continue
        if local is None or local[1] != port or local[0] not in (host, "0.0.0.0", "::"):
            continue
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, milliseconds)
            done += 1
    return done


_user_timeouts: dict[Address, int] = {}
_pending: set[asyncio.Future[int]] = set()


def ensure_user_timeout(scope: Mapping[str, Any], seconds: float) -> None:
    """Bound how long data a stream wrote may stay unacknowledged before the
    kernel drops the connection (a client whose network vanished sends no FIN
    nor RST; without this Linux retransmits for about 15 minutes): once per
    server address and process, ``TCP_USER_TIMEOUT`` of ``seconds`` on its
    sockets (``set_user_timeout``, in a worker thread), raised when a later
    stream asks for more. Linux only; elsewhere nothing happens."""
    server = _address(scope.get("server"))
    milliseconds = int(seconds * 1000)
    if server is None or _TCP_USER_TIMEOUT is None or milliseconds <= 0:
        return
    before = _user_timeouts.get(server, 0)
    if before >= milliseconds:
        return
    _user_timeouts[server] = milliseconds
    job = asyncio.get_running_loop().run_in_executor(None, set_user_timeout, server, milliseconds)
    _pending.add(job)

    def done(job: asyncio.Future[int]) -> None:
        _pending.discard(job)
        failed = job.exception() if not job.cancelled() else None
        if job.cancelled() or failed is not None or job.result() == 0:
            log.warning(
                "TCP_USER_TIMEOUT not set on the sockets of %s:%d (%s): a client whose "
                "network vanished is noticed only after the kernel's retransmissions",
                *server,
                failed or "no socket found",
            )
            if _user_timeouts.get(server) == milliseconds:  # the next stream tries again
                _user_timeouts[server] = before

    job.add_done_callback(done)


class Aborter:
    """Batches connection cuts: every ``abort`` of one loop iteration shares one
    pass over the descriptors, run in a worker thread."""

    def __init__(self) -> None:
        self._batch: dict[ConnectionKey, list[asyncio.Future[bool]]] = {}
        self._running = False

    def abort(self, key: ConnectionKey) -> asyncio.Future[bool]:
        """Cut the connection ``key``; the future says whether it was found."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._batch and not self._running:
            loop.call_soon(self._run)
        self._batch.setdefault(key, []).append(future)
        return future

    def _run(self) -> None:
        batch, self._batch = self._batch, {}
        if not batch:
            return
        self._running = True
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
            self._running = False
            if self._batch:  # asked for while this pass ran: the next pass
                self._run()

        job.add_done_callback(done)
