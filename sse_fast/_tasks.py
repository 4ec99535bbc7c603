"""Stopping a background task for sure; closing an interrupted async generator
(``close_generator``);
the running loop without a system call (``running_loop``); stepping an
awaitable (``step``).

``task.cancel(); await task`` can wait forever: a library may swallow one
cancellation (on Python 3.11, ``asyncio.wait_for`` and ``asyncio.timeout``
lose a cancel that arrives as their inner await completes, and redis-py waits
that way), after which the task carries on as if nothing happened. Our loops
also check a closing flag, and ``stop_task`` cancels again until the task is
gone, within a bound.

A loop that must outlive its faults (a subscription, heartbeats, a relay link):
``carry_on`` around each turn logs what the turn raised, with its traceback, and
goes on; only the task's own cancellation ends it (``cancelled_here``: a
``CancelledError`` out of a future another task cancelled is a fault like any
other). Left uncaught, such an exception ended the task for good and said
nothing: a task kept for ``stop_task`` has its exception read at shutdown only.

One way to put a time limit on an await, everywhere in the package: ``async with
asyncio.timeout(seconds)`` (None: no limit). It makes no task, as
``asyncio.wait_for`` did on Python 3.11 for each wait (tests/test_layout.py
keeps ``wait_for`` out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Generator, Iterator
from typing import Any, TypeVar

log = logging.getLogger("sse_fast")
T = TypeVar("T")


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


def cancelled_here(exc: BaseException) -> bool:
    """Whether ``exc`` is the running task's own cancellation (not a ``CancelledError``
    that came out of a future another task cancelled)."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


@contextlib.contextmanager
def carry_on(what: str, logger: logging.Logger = log) -> Iterator[None]:
    """One turn of a loop that must go on: whatever it raises but the task's own
    cancellation is logged with its traceback (``what`` failed) and swallowed."""
    try:
        yield
    except (Exception, asyncio.CancelledError) as exc:
        if cancelled_here(exc):
            raise
        logger.exception("%s failed (%r); going on", what, exc)


# ---------------------------------------------------------------- the running loop, cheaply

_found: tuple[int, asyncio.AbstractEventLoop] | None = None  # (thread, its running loop)


def running_loop() -> asyncio.AbstractEventLoop:
    """``asyncio.get_running_loop()`` for the per-request paths, without a system call.

    CPython 3.11's ``get_running_loop`` checks the process id with ``getpid()`` on
    every call (a system call: glibc no longer caches it). Under
    ``sse-fast serve`` each system call of the event loop's thread is also where
    the kernel may hand the core to Granian's I/O thread: without the two calls a
    publish made, single publishes went 1.02x faster (``benches.single_publish``, A/B
    in one run). The loop found
    last is kept with its thread and returned while it is running and asked for
    from that thread (an asyncio loop runs in one thread, one loop at a time per
    thread); a forked child forgets it. ``RuntimeError`` without a running loop,
    as ``asyncio``'s."""
    global _found
    found = _found
    if found is not None and found[0] == threading.get_ident() and found[1].is_running():
        return found[1]
    loop = asyncio.get_running_loop()
    _found = (threading.get_ident(), loop)
    return loop


def _forget_loop() -> None:
    global _found
    _found = None


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_forget_loop)


# ---------------------------------------------------------------- time limits


async def close_generator(
    iterator: Any, timeout: float | None, what: str, logger: logging.Logger | None = None
) -> None:
    """``aclose()`` an interrupted async generator (``what``, for the log) so its
    cleanup runs, ``timeout`` seconds at most; whatever happens is logged (to
    ``logger``, the adapter's), not raised (the framework adapters' streams end
    either way)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    logger = logger or log
    deadline = None
    expired = False
    try:
        if timeout is None:
            await aclose()
        else:
            async with asyncio.timeout(timeout) as deadline:
                await aclose()
    except TimeoutError:
        expired = True
    except RuntimeError as exc:
        if "already running" not in str(exc):  # not "aclose(): ... already running"
            logger.exception("Error closing the %s", what)
        else:
            logger.debug("%s not closed: %s", what.capitalize(), exc)
    except Exception:
        logger.exception("Error closing the %s", what)
    # expired, not raised: a generator that swallows the cancellation has still had
    # its cleanup cut short
    if expired or (deadline is not None and deadline.expired()):
        logger.warning("%s cleanup cancelled after %s seconds", what.capitalize(), timeout)


# ---------------------------------------------------------------- stepping an awaitable


class _Rest:
    """The rest of an awaitable that was stepped once and suspended, awaitable
    (what ``yield from`` does, PEP 380): the Task sees what it yields, its
    result is the awaitable's, a cancellation is thrown into it."""

    __slots__ = ("first", "steps")

    def __init__(self, steps: Any, first: Any) -> None:
        self.steps = steps
        self.first = first

    async def abandon(self, timeout: float | None) -> None:
        """Give it up: ``CancelledError`` where it waits (as when the task awaiting
        it is cancelled), then let it finish its cleanup, ``timeout`` at most.
        (``close()`` would leave an async generator "running" on Python < 3.12.)"""
        try:
            value = self.steps.throw(asyncio.CancelledError())
        except (StopIteration, StopAsyncIteration, asyncio.CancelledError):
            return
        except Exception:
            log.debug("an abandoned step ended with an error", exc_info=True)
            return
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(timeout):
                await _Rest(self.steps, value)

    def __await__(self) -> Generator[Any, Any, Any]:
        steps, value = self.steps, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:
                try:
                    value = steps.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = steps.send(sent)
                except StopIteration as stop:
                    return stop.value


def step(awaitable: Awaitable[T]) -> tuple[bool, Any]:
    """Run ``awaitable`` until it first suspends: ``(True, result)`` when it
    finished without suspending (nothing waited: e.g. a queue that had an item),
    else ``(False, rest)``, where ``await rest`` finishes it (or ``await
    rest.abandon(t)`` gives it up: one or the other, or an async generator stays
    "running"). Its exceptions
    (``StopAsyncIteration`` ...) propagate from here or from that await. Lets a
    writer gather what is ready before it writes, without waiting for more."""
    steps = awaitable.__await__()
    try:
        first = steps.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _Rest(steps, first)
