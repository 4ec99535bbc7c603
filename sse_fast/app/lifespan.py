"""The ASGI lifespan: start the hub (its broker, heartbeats, sweeping), and stop
it with a drain; SIGTERM drains first, then stops the worker.

Under Granian, SIGTERM is ours (``install_signal_handlers``): the streams are
drained (closed with a jittered ``retry``, non-readers cut within
``drain_timeout``), then SIGINT, which Granian still owns, stops the worker; it
has no open stream left to wait for and runs lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from .._core import EXTENSION_IMPORT_ERROR
from ..asgi import Receive, Send
from ..hub import Hub
from ..settings import Settings
from .operations import Operations

__all__ = ["Lifespan"]

log = logging.getLogger("sse_fast")


class Lifespan:
    """The app's ASGI lifespan handler: ``startup`` and ``shutdown`` on the server's messages (a
    failed startup is reported as ``lifespan.startup.failed``)."""

    def __init__(self, settings: Settings, hub: Hub, operations: Operations) -> None:
        self.settings = settings
        self.hub = hub
        self.operations = operations
        self.upstream = operations.upstream
        self._stopping = False
        self._stop_task: asyncio.Task[None] | None = None

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
        """Start the hub and mirror mode's upstream, and take SIGTERM when
        ``install_signal_handlers``. Say so when the native core did not load."""
        if EXTENSION_IMPORT_ERROR is not None:
            log.warning(
                "the native core did not load (%s): running on the pure-Python twins, several "
                "times slower; rebuild it (pip install -e . in a checkout, or reinstall "
                "sse_fast), or set SSE_FAST_NO_EXTENSIONS=1 to choose the twins",
                EXTENSION_IMPORT_ERROR,
            )
        await self.hub.start()
        if self.upstream is not None:
            await self.upstream.start()
        if self.settings.install_signal_handlers:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._on_sigterm)

    async def shutdown(self) -> None:
        """Stop mirror mode's upstream, then the hub (a drain unless drained)."""
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
        """Not ready any more, then drain the streams (SIGTERM; a host
        application's shutdown, ``App.running``)."""
        self.operations.ready = False
        await self.hub.drain()

    async def _drain_then_stop(self) -> None:
        await self.drain()
        os.kill(os.getpid(), signal.SIGINT)
