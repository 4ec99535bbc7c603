"""Ending long-lived streams when the server shuts down, under any ASGI server.

ASGI servers wait for open responses before they stop (uvicorn runs the lifespan
shutdown only after them; Granian waits without telling the app), so SSE streams
must be ended by the application. The parts that hold streams outside ``sse-fast
serve`` (``sse_fast.starlette`` responses, a hub mounted in a host application)
``add`` a callback; the first ``install`` chains a handler for SIGTERM and SIGINT
in front of whatever is there (the server's own): it calls every callback, then
the previous handler, so the server still shuts down as it would have. Signal
handlers can only be set from the main thread; elsewhere ``install`` does nothing
and ``trigger()`` is the way in. Callbacks run in the signal handler's context:
they must only schedule work (``loop.call_soon_threadsafe``).

Each adapter has its own switch: its ``OpenStreams.on_signals`` (sse-starlette's
``AppStatus.enable_automatic_graceful_drain`` is the Starlette drop-in's). Off,
a signal leaves that adapter's streams open (``stop_all`` still ends them) and
every other adapter's, and a mounted hub's drain, go on as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger("sse_fast")
S = TypeVar("S")

_lock = threading.Lock()
_callbacks: list[Callable[[], object]] = []
_installed = False


def add(callback: Callable[[], object]) -> None:
    with _lock:
        if callback not in _callbacks:
            _callbacks.append(callback)


def discard(callback: Callable[[], object]) -> None:
    with _lock:
        if callback in _callbacks:
            _callbacks.remove(callback)


def trigger() -> None:
    """Call every callback (each schedules its own shutdown work): what SIGTERM and
    SIGINT do. An adapter whose switch is off (``OpenStreams.on_signals``) does nothing."""
    with _lock:
        callbacks = list(_callbacks)
    for callback in callbacks:
        try:
            callback()
        except Exception:  # pragma: no cover - a callback's bug must not stop the others
            log.exception("shutdown callback %r failed", callback)


def install() -> None:
    """Chain SIGTERM and SIGINT (once per process, main thread only)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous = signal.getsignal(sig)
        except (ValueError, OSError):  # pragma: no cover - not a settable signal here
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            trigger()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL and signum == signal.SIGINT:
                raise KeyboardInterrupt

        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, handler)


def uvicorn_exiting() -> bool:
    """True when a uvicorn server of this process is shutting down (its SIGTERM
    handler is a bound method of the server, which has ``should_exit``)."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


class OpenStreams(Generic[S]):
    """The open streams of one kind in this process (one adapter's). ``stop_all``
    (SIGTERM, through ``install``, while ``on_signals``) calls ``stop(stream)`` for
    each on its own event loop; safe from any thread and from a signal handler.
    Streams are held weakly."""

    def __init__(self, stop: Callable[[S], object]) -> None:
        self._stop = stop
        self._open: weakref.WeakKeyDictionary[S, asyncio.AbstractEventLoop] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        #: this adapter's switch: whether SIGTERM and SIGINT stop its streams
        #: (``stop_all`` called directly always does)
        self.on_signals = True

    def __len__(self) -> int:
        return len(self._open)

    def add(self, stream: S, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._open[stream] = loop
        add(self._signalled)
        install()

    def discard(self, stream: S) -> None:
        with self._lock:
            self._open.pop(stream, None)

    def _signalled(self) -> None:
        if self.on_signals:
            self.stop_all()

    def stop_all(self) -> int:
        """Stop every open stream; how many there were."""
        with self._lock:
            streams = list(self._open.items())
        for stream, loop in streams:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing to stop
                loop.call_soon_threadsafe(self._stop, stream)
        return len(streams)
