"""Pausing Python's cyclic garbage collector where a burst of allocations would
set off collections over everything held, each a stall of the event loop:

* a drain closing every stream in one step (``hub/_lifecycle.py``);
* a start restoring its history (``brokers/durable/_restore.py``): the events
  read back are ``NamedTuple`` instances, which the collector tracks (it untracks
  plain tuples only), and a full collection over 1.5 million of them took
  0.45 s, up to 1.6 s with 4 workers on 2 cores.

Reference counting frees as ever meanwhile; what only the collector can free
waits for it to run again.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (reference counting frees as ever); the
    collector's state is restored after, whatever it was (a host application's)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
