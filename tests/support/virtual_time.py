"""An event loop on a clock of the test's: time moves only when the test spends it
(``spend``: a callback that burns CPU, or one that blocks) or when the loop would
wait for its next timer (it jumps to it at once). Timing logic that reads its loop's
``time()`` (and, given ``loop.thread_time``, its thread's CPU time) sees exactly the
load the test describes, however loaded the machine is: no test of it needs to run
alone, and none waits in real time.

    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        runner.run(main())  # asyncio.get_running_loop() in main is the VirtualLoop

A loop with nothing scheduled and nothing ready would wait forever: it raises
instead, naming that.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

__all__ = ["VirtualLoop", "running"]


class _Selector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The loop's selector: real file descriptors are looked at without waiting,
    and a wait for a timer moves the loop's clock to it instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("the virtual loop would wait forever: nothing is scheduled")
        assert self.loop is not None
        self.loop.now += timeout
        return ready


class VirtualLoop(asyncio.SelectorEventLoop):
    """``time()`` is ``now``; ``thread_time()`` the CPU seconds the test spent."""

    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0
        self.cpu = 0.0

    def time(self) -> float:
        return self.now

    def thread_time(self) -> float:
        return self.cpu

    def spend(self, seconds: float, *, cpu: bool = True) -> None:
        """What a callback that runs ``seconds`` costs: the loop's time moves on, and
        with ``cpu`` its thread's CPU time too (without: it blocked, or its thread
        waited for its core)."""
        self.now += seconds
        if cpu:
            self.cpu += seconds


def running() -> VirtualLoop:
    """The running loop, a ``VirtualLoop`` (``TypeError`` if it is not one)."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualLoop):
        raise TypeError(f"{loop!r} is not a VirtualLoop: run the test with one")
    return loop
