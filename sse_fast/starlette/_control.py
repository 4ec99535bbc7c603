"""What ends the streams of a process: sse-starlette's ``AppStatus`` switch,
``shutdown_streams()``, the registry of open streams they act on, and
``wait_for_exit()``, the same news for code that awaits it (the default
``EventSourceResponse._listen_for_exit_signal``)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from .. import _shutdown

__all__ = [
    "AppStatus",
    "SendTimeoutError",
    "open_streams",
    "shutdown_streams",
    "streams",
    "wait_for_exit",
]


class SendTimeoutError(TimeoutError):
    """A write to the client did not complete within ``send_timeout``."""


SendTimeoutError.__module__ = "sse_fast.starlette"  # its public name, for pickle and logs


class _Stoppable(Protocol):
    def shut_down(self) -> None: ...


#: the open streams of this process (``shutdown_streams`` ends them)
streams: _shutdown.OpenStreams[_Stoppable] = _shutdown.OpenStreams(lambda s: s.shut_down())


class _ExitWaiter:
    """One ``wait_for_exit()`` in the registry: ``shut_down`` (on its loop) wakes it."""

    __slots__ = ("__weakref__", "woken")

    def __init__(self, woken: asyncio.Future[None]) -> None:
        self.woken = woken

    def shut_down(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


async def wait_for_exit() -> None:
    """Return when the streams of this process are told to end (``shutdown_streams()``:
    SIGTERM or SIGINT, ``AppStatus.should_exit``), at once if the server is already
    shutting down. Counted by ``open_streams()`` while it waits."""
    if AppStatus.should_exit or _shutdown.uvicorn_exiting():
        return
    loop = asyncio.get_running_loop()
    waiter = _ExitWaiter(loop.create_future())
    streams.add(waiter, loop)
    try:
        if not AppStatus.should_exit:  # (set from another thread meanwhile)
            await waiter.woken
    finally:
        streams.discard(waiter)


def shutdown_streams() -> int:
    """End every open stream of this process (see "Shutdown"); returns how many.
    Safe to call from any thread and from a signal handler."""
    return streams.stop_all()


def open_streams() -> int:
    """How many streams of this process are open now: what ``shutdown_streams()``
    would end (for a health page or a gauge)."""
    return len(streams)


class _AppStatusMeta(type):
    """``AppStatus.should_exit = True`` (sse-starlette's switch) ends the streams."""

    def __setattr__(cls, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "should_exit" and value:
            shutdown_streams()
        elif name == "enable_automatic_graceful_drain":  # this adapter's switch only
            streams.on_signals = bool(value)


class AppStatus(metaclass=_AppStatusMeta):
    """sse-starlette's shutdown switch: set ``should_exit`` to true to end every
    stream (``shutdown_streams``); new streams end at once while it is true."""

    should_exit = False
    enable_automatic_graceful_drain = True

    @staticmethod
    def disable_automatic_graceful_drain() -> None:
        """Signals no longer end this adapter's streams (set ``should_exit`` yourself);
        other adapters' (aiohttp, Django, a mounted hub) still end."""
        AppStatus.enable_automatic_graceful_drain = False

    @staticmethod
    def enable_automatic_graceful_drain_mode() -> None:
        """Signals end this adapter's streams again (the default)."""
        AppStatus.enable_automatic_graceful_drain = True
