"""The listening sockets of ``sse-fast serve``, made here so that each connection's
kernel send buffer is bounded (``stream_send_buffer``).

Theory of operation:

* What the server writes to a client that stops reading waits in the server's
  kernel send buffer. Linux autotunes that buffer per socket up to
  ``net.ipv4.tcp_wmem``'s maximum (4 MiB by default), outside the process's memory
  and unbounded by anything of ours: 500 never-reading clients pinned about 1.5 GiB
  of kernel memory while the worker's RSS stayed at 170 MB. ``SO_SNDBUF`` on a socket
  turns the autotuning off for it and caps it (the kernel allows twice the value, its
  bookkeeping included); an accepted socket inherits it from its listener.
* On Linux each Granian worker binds a listener of its own on the port
  (``SO_REUSEPORT``; the kernel spreads connections among them), in Rust, where no
  option of ours reaches. Granian also accepts a ready socket: a ``SocketHolder`` (a
  file descriptor), the path it takes on other systems for one socket all workers
  share.
* So ``BoundedSendBufferServer`` (Granian's process server) makes each worker's
  listener itself, just before it starts that worker: Granian's options
  (``SO_REUSEADDR``, ``SO_REUSEPORT``, ``TCP_NODELAY``) plus ``SO_SNDBUF``, bound
  here, put in listening state by the worker. Once the worker is forked the server
  closes its own copy, so, as under Granian, a listener lives in its worker alone: a
  worker that exits takes its listener (and the connections waiting on it) with it,
  and a respawned worker gets a new one. Granian's code is not changed, but the
  subclass overrides two of its private methods and sets its private ``_shd``:
  ``tests/test_granian_contract.py`` checks those names, and
  ``docs/operations/granian.md`` says what each works around.
* 0 keeps Granian's own listeners (the kernel's autotuning). So do the servers this
  cannot serve, with a warning in the log: Granian's thread server (free-threaded
  Python) and workers that are not forked (a descriptor number would not be theirs).
* The same listeners hand a connection to its worker only once its first bytes have
  arrived (``TCP_DEFER_ACCEPT``, Linux; nginx's ``listen ... deferred``). Granian
  starts a connection's ``header_timeout`` when it accepts it, and a client may be
  slow to write between its handshake and its request: in a reconnect storm of
  100,000 streams, clients starved of CPU took longer than 5 s, and Granian closed
  154,000 of their connections before any response (``benches/streams_100k.py``).
  Deferred, the connection waits in the kernel as a half-open request (no descriptor,
  no worker memory) until its request comes; one that stays silent is accepted
  after ``defer_accept`` seconds anyway (the kernel rounds up to its SYN-ACK
  retransmissions: 1, 3, 7, 15 s...), and Granian closes it ``header_timeout`` later.
  A connect flood of silent clients costs the workers nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing
import socket
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from granian.server.mp import MPServer
    from granian.server.mt import MTServer

log = logging.getLogger("sse_fast")

__all__ = ["granian_server", "listener_socket"]


def listener_socket(host: str, port: int, send_buffer: int, defer_accept: int = 0) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (not listening yet) with the options
    Granian gives its own listeners, ``SO_SNDBUF`` = ``send_buffer`` (> 0), and
    ``TCP_DEFER_ACCEPT`` = ``defer_accept`` seconds where the system has it (0: off)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        if defer_accept > 0 and hasattr(socket, "TCP_DEFER_ACCEPT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, defer_accept)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def granian_server(send_buffer: int, defer_accept: int = 0) -> type[MPServer] | type[MTServer]:
    """The Granian server class that gives connections a send buffer of
    ``send_buffer`` bytes (0: Granian's own, the kernel autotunes) and hands them to
    workers once their first bytes came (``defer_accept`` seconds at most; 0: at once)."""
    from granian import Granian
    from granian.server import MPServer

    if not send_buffer:
        return Granian
    if Granian is not MPServer:
        log.warning(
            "stream_send_buffer %d not applied: Granian runs its workers as threads here "
            "(free-threaded Python); the kernel autotunes each send buffer",
            send_buffer,
        )
        return Granian
    if multiprocessing.get_start_method() != "fork":
        log.warning(
            "stream_send_buffer %d not applied: Python starts Granian's workers by %r, not "
            "by fork, so they cannot take a listener made here; the kernel autotunes each "
            "send buffer",
            send_buffer,
            multiprocessing.get_start_method(),
        )
        return Granian
    return cast("type[MPServer]", _bounded_send_buffer_server(MPServer, send_buffer, defer_accept))


def _bounded_send_buffer_server(base: Any, send_buffer: int, defer_accept: int) -> Any:
    from granian._granian import SocketHolder

    class BoundedSendBufferServer(base):  # type: ignore[misc]
        """Granian's process server whose workers listen on sockets made here, with
        ``SO_SNDBUF`` set (see the module docstring)."""

        _shd: Any  # Granian's: the listener a worker is given (a ``SocketHolder``)

        def _init_shared_socket(self) -> None:
            self._ssp = self._shd = self._sfd = self._sso = None
            probe = listener_socket(self.bind_addr, self.bind_port, send_buffer)
            granted = probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            probe.close()
            log.info(
                "stream send buffer: SO_SNDBUF %d, the kernel holds at most %d bytes per "
                "connection",
                send_buffer,
                granted,
            )
            if granted < 2 * send_buffer:
                log.warning(
                    "stream_send_buffer %d capped by the kernel at %d (net.core.wmem_max): "
                    "raise net.core.wmem_max or lower stream_send_buffer",
                    send_buffer,
                    granted // 2,
                )

        def _spawn_worker(self, idx: int, target: Any, callback_loader: Any) -> Any:
            listener = listener_socket(self.bind_addr, self.bind_port, send_buffer, defer_accept)
            # Linux's SocketHolder(fd, is_uds, backlog); Granian's stub lists no constructor
            self._shd = SocketHolder(listener.fileno(), False, self.backlog)  # type: ignore[call-arg]
            try:
                worker = super()._spawn_worker(idx, target, callback_loader)
            except BaseException:
                listener.close()
                raise
            finally:
                self._shd = None
            start = worker.start

            def start_then_let_go() -> None:
                try:
                    start()  # forks: the worker has its copy of the listener
                finally:
                    listener.close()

            worker.start = start_then_let_go
            return worker

    return BoundedSendBufferServer
