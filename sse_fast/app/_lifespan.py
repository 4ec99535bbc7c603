"""The ASGI lifespan: start the hub (its broker, heartbeats, sweeping), and stop
it with a drain; SIGTERM drains first, then stops the worker.

Under Granian, SIGTERM is ours (``install_signal_handlers``): the streams are
drained (closed with a jittered ``retry``, non-readers cut within
``drain_timeout``), then SIGINT, which Granian still owns, stops the worker; it
has no open stream left to wait for and runs lifespan shutdown.

Under ``sse-fast serve`` (``start_failure_file``) the startup completes at once
and the hub starts in the background, so the worker answers ``/livez`` while it
restores history (``_start.py``); a start that fails there is reported to the
main process, which stops the server (``sse_fast/_startup.py``). Elsewhere (a
host application, another ASGI server) the startup waits for the hub, and a
failure is ``lifespan.startup.failed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

from .._asgi import Receive, Send
from .._core import EXTENSION_IMPORT_ERROR
from .._startup import StartReport, let_sigterm_through
from .._tasks import stop_task
from ..brokers.durable import StoreError, StoreWriteError
from ..brokers.durable._directory import START_ROOM, write_failure
from ..hub import Hub
from ..settings._handoff import Handoff
from ._start import WorkerStart

if TYPE_CHECKING:  # mirror mode's module needs httpx: imported only when it is on
    from ._upstream import Upstream

__all__ = ["Lifespan"]

log = logging.getLogger("sse_fast")


class Lifespan:
    """The app's ASGI lifespan handler: ``startup`` and ``shutdown`` on the server's messages (a
    failed startup is reported as ``lifespan.startup.failed``)."""

    def __init__(
        self,
        handoff: Handoff,
        hub: Hub,
        start: WorkerStart,
        upstream: Upstream | None = None,
    ) -> None:
        """``handoff``: what ``sse-fast serve`` decided (a start in the background with
        ``start_failure_file``, SIGTERM taken with ``install_signal_handlers``)."""
        self.handoff = handoff
        self.hub = hub
        #: mirror mode's reader, started and stopped with the hub
        self.upstream = upstream
        #: where the start is (this object alone moves it)
        self.start = start
        self._stopping = False
        self._stop_task: asyncio.Task[None] | None = None
        self._start_task: asyncio.Task[None] | None = None

    async def __call__(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Start the hub and mirror mode's upstream (in the background with
        ``start_failure_file``), and take SIGTERM when ``install_signal_handlers``.
        Say so when the native core did not load."""
        if EXTENSION_IMPORT_ERROR is not None:
            log.warning(
                "the native core did not load (%s): running on the pure-Python twins, several "
                "times slower; rebuild it (pip install -e . in a checkout, or reinstall "
                "sse_fast), or set SSE_FAST_NO_EXTENSIONS=1 to choose the twins",
                EXTENSION_IMPORT_ERROR,
            )
        loop = asyncio.get_running_loop()
        if self.handoff.start_failure_file:
            self.start.begin()
            self._start_task = loop.create_task(self._start_in_background())
        else:
            await self._start()
        if self.handoff.install_signal_handlers:
            self._take_sigterm(loop)

    def _take_sigterm(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM drains, then stops the worker. Taken with ``signal.signal`` and handed
        to the loop, not with ``loop.add_signal_handler``: uvloop keeps a signal that
        comes while its loop is paused, as Granian's worker pauses it between the
        lifespan's startup and serving, without ever acting on it (a stop lost there
        left the worker serving, the main process waiting for it). Granian's own
        handler goes first, so it does not stop the worker undrained; then a SIGTERM
        held since ``serve`` forked the worker is let through (``_startup.py``)."""
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(
            signal.SIGTERM, lambda signum, frame: loop.call_soon_threadsafe(self._on_sigterm)
        )
        let_sigterm_through()

    async def _start(self) -> None:
        await self.hub.start()
        if self.upstream is not None:
            await self.upstream.start()

    async def _start_in_background(self) -> None:
        """``_start`` while the worker answers; then serve, or report why not (the
        main process stops the server)."""
        try:
            await self._start()
        except Exception as exc:
            message = self.failure_message(exc)
            self.start.failed(message)
            if not isinstance(exc, (StoreError, ConnectionError, OSError)):
                log.exception("the start failed")  # a bug: its traceback helps
            try:
                StartReport(self.handoff.start_failure_file).fail(message)
            except OSError:  # the server is stopping already (its report removed)
                log.error("the start failed: %s", message)
            return
        self.start.started()

    def failure_message(self, exc: Exception) -> str:
        """One sentence for a failed start: what was wrong and what to do."""
        if isinstance(exc, StoreWriteError):
            # worded for a publish ("publish again"); at start it is the directory
            return self._directory_failure() or f"the data directory cannot be written: {exc}"
        if isinstance(exc, (StoreError, ConnectionError)):
            return str(exc)
        return f"{type(exc).__name__}: {exc} (a bug, its traceback is in the log: please report it)"

    def _directory_failure(self) -> str:
        """Why the data directory cannot take a start's writes now ("" if it can)."""
        path = self.handoff.store_dir
        try:
            fd = os.open(os.path.join(path, "lock"), os.O_WRONLY)
        except OSError as exc:
            return write_failure(path, exc)
        try:
            size = os.fstat(fd).st_size
            os.posix_fallocate(fd, 0, START_ROOM)
            os.ftruncate(fd, size)
        except OSError as exc:
            return write_failure(path, exc)
        finally:
            os.close(fd)
        return ""

    async def shutdown(self) -> None:
        """Stop mirror mode's upstream, then the hub (a drain unless drained). A
        start still under way is only cancelled: the hub never served, and its data
        directory may still be being opened in a thread, so it is left as a crash
        leaves it (the next start reads it again; nothing is lost)."""
        if self._start_task is not None and not self._start_task.done():
            await stop_task(self._start_task)
            log.info("lifespan shutdown while starting: the history on disk is left as it was")
            return
        if self.upstream is not None:
            await self.upstream.stop()
        await self.hub.stop()
        log.info("lifespan shutdown complete")

    def _on_sigterm(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("SIGTERM: draining %d stream(s)", len(self.hub.subscriptions))
        self._stop_task = asyncio.get_running_loop().create_task(self._drain_then_stop())

    async def drain(self) -> None:
        """Drain the streams, not ready from its first step (SIGTERM; a host
        application's shutdown, ``App.running``)."""
        await self.hub.drain()

    async def _drain_then_stop(self) -> None:
        loop = asyncio.get_running_loop()
        began, streams = loop.time(), len(self.hub.subscriptions)
        cut = self.hub.metrics.cut_total
        await self.drain()
        log.info(
            "drained %d stream(s) in %.1f s (%d cut): stopping the worker",
            streams,
            loop.time() - began,
            self.hub.metrics.cut_total - cut,
        )
        os.kill(os.getpid(), signal.SIGINT)
