"""Waiting on a condition with a deadline, never for a fixed time, from code that is
not in an event loop: ``until`` asks ``check`` until it returns something true
(returned) or ``timeout`` seconds pass (an ``AssertionError`` saying ``what`` did not
happen). The pause between two looks is only how often to look. In a loop, the same
is ``sse_fast.testing.wait_for``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


def until(check: Callable[[], T], timeout: float, what: str, every: float = 0.01) -> T:
    """``check()`` once it is true; fails with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)
    return found
