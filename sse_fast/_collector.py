"""Pausing Python's cyclic garbage collector where a burst of allocations would
set off collections over everything held, each a stall of the event loop, and
freeing a burst's objects without one:

* a drain closing every stream in one step (``hub/_lifecycle.py``);
* a start restoring its history (``brokers/durable/_restore.py``): the events
  read back are ``NamedTuple`` instances, which the collector tracks (it untracks
  plain tuples only), and a full collection over 1.5 million of them took
  0.45 s, up to 1.6 s with 4 workers on 2 cores.

Reference counting frees as ever meanwhile; what only the collector can free
waits for it to run again.

Pauses nest and may end in another thread than the one that began them
(``pause``, ``resume``): the collector runs again when the last one ends, as it
was before the first (a host application's choice kept).

Freeing is work too: a list of 2 million events read back is freed in 0.19 s
when it goes, and in 0.93 s with 4 workers starting on 2 cores beside 2 CPU hogs, one step the
event loop (and every other thread) waits for. ``free_gradually`` frees a list
a slice at a time, so other threads get the interpreter between slices;
``discard`` does that in a daemon thread of its own, for what a stopping
process still holds (a start stopped while it restored): the stop does not
wait for it, nor does the process's exit, and the collector stays paused until
it is done.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["FREE_SLICE", "discard", "free_gradually", "gc_paused", "pause", "resume"]

#: items freed at a time (about a millisecond for events read back)
FREE_SLICE = 10_000

_lock = threading.Lock()
_pauses = 0
_enabled_before = False


def pause() -> None:
    """Begin a pause of the collector (``resume`` ends it, in any thread)."""
    global _pauses, _enabled_before
    with _lock:
        if _pauses == 0:
            _enabled_before = gc.isenabled()
            gc.disable()
        _pauses += 1


def resume() -> None:
    """End a pause; the last one gives the collector back the state it had before
    the first."""
    global _pauses
    with _lock:
        if _pauses == 0:
            raise RuntimeError("resume() without pause()")
        _pauses -= 1
        if _pauses == 0 and _enabled_before:
            gc.enable()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (reference counting frees as ever); the
    collector's state is restored after the last pause, whatever it was (a host
    application's)."""
    pause()
    try:
        yield
    finally:
        resume()


def free_gradually(items: list[Any], step: int = FREE_SLICE) -> None:
    """Empty ``items`` from its end, ``step`` items at a time: another thread waiting
    for the interpreter gets it between slices (one ``clear()`` holds it throughout)."""
    while items:
        del items[-step:]


def discard(items: list[Any]) -> threading.Thread | None:
    """Free ``items`` in a daemon thread (``free_gradually``), the collector paused
    until it is done; the caller goes on at once. The list is the thread's to empty:
    the caller keeps no use of it. The thread (None when there was nothing to free)."""
    if not items:
        return None
    pause()

    def run() -> None:
        try:
            free_gradually(items)
        finally:
            resume()

    thread = threading.Thread(target=run, name="sse-fast-discard", daemon=True)
    thread.start()
    return thread
