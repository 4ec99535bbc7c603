"""Stopping a background task for sure.

``task.cancel(); await task`` can wait forever: a library may swallow one
cancellation (on Python 3.11, ``asyncio.wait_for`` and ``asyncio.timeout``
lose a cancel that arrives as their inner await completes, and redis-py waits
that way), after which the task carries on as if nothing happened. Our loops
also check a closing flag, and ``stop_task`` cancels again until the task is
gone, within a bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("sse_fast")


async def stop_task(task: asyncio.Task[Any] | None, timeout: float = 5.0) -> bool:
    """Cancel ``task`` (again while it lives on) and wait for it, at most
    ``timeout`` seconds; False (and a warning) if it outlived that. Its
    exception, if it ended with one, is retrieved and logged at debug level."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("task %s did not stop within %g s of being cancelled", task, timeout)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.1, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())
    return True
