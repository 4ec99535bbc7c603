"""Reading a request body within a deadline, and cutting the reads a shutdown
would otherwise wait for.

A client that declares ``Content-Length: 1000`` and sends 5 bytes, or stops a
chunked body halfway, would hold its request task, and with it a graceful
shutdown, for as long as it keeps the socket open. So every body read has a
deadline, ``body_timeout`` seconds after it started (408 past it), and once a
drain starts the reads still going are cut when ``drain_timeout`` ends (503):
the server then has nothing left to wait for. Both are counted by the refusal
metric, as ``body_timeout`` and ``draining``.

Cheap on the publish path: a read is one dict entry (its task and deadline);
one timer per worker, armed only while reads are going, looks at them every
``SWEEP_INTERVAL`` seconds and cancels the late ones. The cancelled read turns
the cancellation back into an ``HTTPError`` (and takes it back from the task);
a cancellation that is not ours passes through unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from .._asgi import Scope
from .._tasks import running_loop
from ..hub import Hub
from ..settings import LimitSettings, StreamSettings
from ._http import HTTPError

__all__ = ["BodyDeadlines", "shut_reading"]

#: how often late reads are looked for (a deadline is kept to within this)
SWEEP_INTERVAL = 0.25
T = TypeVar("T")
log = logging.getLogger("sse_fast")


class BodyDeadlines:
    """The body reads going on in one worker and their deadlines (one per app)."""

    def __init__(
        self, limits: LimitSettings, streams: StreamSettings, hub: Hub, cut_sockets: bool = False
    ) -> None:
        self.timeout = limits.body_timeout
        self.drain_timeout = streams.drain_timeout
        self._reading: dict[asyncio.Task[object], float] = {}  # task -> deadline (loop time)
        self._cut: dict[asyncio.Task[object], HTTPError] = {}  # cancelled by us, and why
        self._scopes: dict[asyncio.Task[object], Scope] = {}
        #: under ``sse-fast serve`` (Granian, whose wait for a body outlives a cancelled
        #: receive()); an embedding server's sockets are its own
        self.cut_sockets = cut_sockets
        self._to_cut: list[Scope] = []
        self._cutting: asyncio.Future[int] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._drain_deadline: float | None = None
        hub.when_draining(self._on_drain)

    async def read(self, scope: Scope, reading: Awaitable[T]) -> T:
        """``await reading`` (a coroutine not yet started), an ``HTTPError`` (408, or
        503 while draining) if it has not finished by its deadline."""
        loop = running_loop()
        task: asyncio.Task[object] | None = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - no task: not under a server
            return await reading
        deadline = loop.time() + self.timeout
        if self._drain_deadline is not None:
            deadline = min(deadline, self._drain_deadline)
        reads = self._reading
        reads[task] = deadline
        self._scopes[task] = scope
        if self._sweeper is None:
            self._sweeper = loop.call_at(
                min(deadline, loop.time() + SWEEP_INTERVAL), self._sweep, loop
            )
        try:
            return await reading
        except asyncio.CancelledError:
            error = self._cut.pop(task, None)
            if error is None or task.uncancel() > 0:
                raise  # not ours, or someone else cancelled the task too
            raise error from None
        finally:
            del reads[task]
            del self._scopes[task]
            if self._cut:
                self._cut.pop(task, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        now = loop.time()
        late = []
        for task, deadline in list(self._reading.items()):
            if deadline <= now and task not in self._cut and not task.cancelling():
                self._cut[task] = self._error(now)
                task.cancel()
                late.append(self._scopes[task])
        if self._reading or self._to_cut:
            self._sweeper = loop.call_at(now + SWEEP_INTERVAL, self._sweep, loop)
        if self.cut_sockets:
            self._to_cut += [scope for scope in late if scope.get("http_version") in HTTP1]
            self._cut_connections(loop)

    def _cut_connections(self, loop: asyncio.AbstractEventLoop) -> None:
        """Shut the late requests' connections, in a thread (the scan costs about
        14 us per open descriptor), one scan at a time: the scopes that come
        meanwhile wait for the next sweep."""
        if not self._to_cut or (self._cutting is not None and not self._cutting.done()):
            return
        scopes, self._to_cut = self._to_cut, []
        self._cutting = loop.run_in_executor(None, shut_reading, scopes)
        self._cutting.add_done_callback(_log_failure)

    def _error(self, now: float) -> HTTPError:
        if self._drain_deadline is not None and now >= self._drain_deadline:
            return HTTPError(
                503,
                "the server is shutting down and the request body had not all arrived "
                f"within drain_timeout ({self.drain_timeout:g} s): nothing was published; "
                "send it again (to another server)",
                reason="draining",
            )
        return HTTPError(
            408,
            f"the request body did not all arrive within {self.timeout:g} s (body_timeout): "
            "nothing was published; send the whole body at once, or raise --body-timeout "
            "for slow links",
            reason="body_timeout",
        )

    def _on_drain(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - a drain is always run on the loop
            return
        self._drain_deadline = loop.time() + self.drain_timeout
        for task, deadline in self._reading.items():
            self._reading[task] = min(deadline, self._drain_deadline)


#: the HTTP versions whose connection carries one request at a time (an HTTP/2
#: connection also carries the client's other streams: it is not cut)
HTTP1 = ("1.0", "1.1")


def _log_failure(done: asyncio.Future[int]) -> None:
    if not done.cancelled() and done.exception() is not None:  # pragma: no cover
        log.error("could not cut the connections of late request bodies: %r", done.exception())


def shut_reading(scopes: Iterable[Scope]) -> int:
    """Shut the reading side of the TCP connections of ``scopes`` (by their
    addresses, among this process's sockets); how many were found.

    Cancelling an ASGI ``receive()`` does not stop the server's own wait for the
    body (Granian's goes on until the client sends or leaves), and that wait
    keeps the connection, and a graceful shutdown, open. With its reading side
    shut the server sees the body end, writes the answer and closes.
    """
    wanted = set()
    for scope in scopes:  # the local port and the peer: the local address may be 0.0.0.0
        server, client = scope.get("server"), scope.get("client")
        if server and client:
            wanted.add((int(server[1]), _address(client)))
    if not wanted:
        return 0
    found = 0
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:  # pragma: no cover - not Linux
        return 0
    for name in descriptors:
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            duplicate = os.dup(int(name))
            with socket.socket(fileno=duplicate) as sock:  # its own family, detected
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                pair = (int(sock.getsockname()[1]), _address(sock.getpeername()))
                if pair in wanted:
                    sock.shutdown(socket.SHUT_RD)
                    found += 1
                    if found == len(wanted):
                        break
        except (OSError, ValueError):  # gone meanwhile, not connected, not TCP
            continue
    if found < len(wanted):
        log.debug("%d of %d late connections not found to cut", len(wanted) - found, len(wanted))
    return found


def _address(address: Any) -> tuple[str, int]:
    host, port = address[0], address[1]
    if host.startswith("::ffff:"):
        host = host[7:]
    return host, int(port)
