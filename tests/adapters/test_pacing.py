"""sse_fast/_adapters/pacing.py: when an event loop counts as saturated, and the shared tick.

On a loop of the test's clock (tests/support/virtual_time.py), loaded as each test
says: a loop that idles never turns busy; one that burns its thread's CPU does,
and so does one whose callbacks block without using CPU (what a thread that shares
its core looks like: only the late probes see it); busy lasts a hold, then the loop
is tried without pacing, and the hold doubles while the loop stays saturated. The
tick releases its waiters together, each waiter on a future of its own. The same
pacer under a real server and a really saturated loop: tests/adapters/
test_starlette_servers.py (alone: it measures the machine's loop)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from sse_fast._adapters import pacing as _pacing

from ..support.virtual_time import VirtualLoop, running

#: the pacer is pure Python and reads only its loop's clocks: the core's mode changes
#: nothing of what is checked
pytestmark = pytest.mark.mode_independent


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        runner.run(main())


async def _until(check: Callable[[], bool], within: float, what: str) -> None:
    """Until ``check()``, looked at every probe period, ``within`` seconds of the
    loop's clock (an AssertionError saying ``what`` past them)."""
    loop = running()
    deadline = loop.time() + within
    while not check():
        assert loop.time() <= deadline, f"{what}: not within {within:g} s"
        await asyncio.sleep(_pacing.PROBE)  # pace: a look every probe, on the virtual clock


class _Watched(_pacing.Pacer):
    """A pacer on the virtual loop's clocks that counts the windows it measured and
    notes each hold it had."""

    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__(loop, thread_time=loop.thread_time)
        self.windows = 0
        self.holds: list[float] = [self._hold]
        self.engaged_at: list[float] = []  # the loop's time each time it turned busy

    def measure(self, now: float) -> None:
        engaged = self.engaged
        super().measure(now)
        self.windows += 1
        if self.engaged != engaged:
            self.engaged_at.append(now)
        if self.holds[-1] != self._hold:
            self.holds.append(self._hold)

    async def windows_pass(self, count: int) -> None:
        """Until ``count`` more windows are measured."""
        until = self.windows + count
        await _until(lambda: self.windows >= until, count * 2 * _pacing.WINDOW, "windows")


def _burn(loop: VirtualLoop, until: float, slice_: Callable[[VirtualLoop], None]) -> None:
    """Run ``slice_`` again and again from the loop's ready queue until ``until``:
    the loop is never idle, but timers still get their turn between slices."""

    def again() -> None:
        if loop.time() < until:
            slice_(loop)
            loop.call_soon(again)

    loop.call_soon(again)


def _spin(loop: VirtualLoop) -> None:  # 20 ms of CPU
    loop.spend(0.02)


def _block(loop: VirtualLoop) -> None:  # 50 ms of the loop's time, no CPU
    loop.spend(0.05, cpu=False)


def test_an_idle_loop_never_turns_busy_and_the_last_stream_stops_the_probes() -> None:
    async def main() -> None:
        pacer = _Watched(running())
        pacer.opened()
        pacer.opened()
        await pacer.windows_pass(3)
        assert not pacer.busy and pacer.engaged == 0 and pacer.load < 0.5
        pacer.closed()
        assert pacer._monitor is not None  # one stream still open
        pacer.closed()
        assert pacer._monitor is None and pacer.streams == 0

    _run(main)


def test_a_pacer_does_not_keep_its_loop_alive() -> None:
    import gc
    import weakref

    async def main() -> None:
        found = _pacing.pacer(asyncio.get_running_loop())
        assert _pacing.pacer(asyncio.get_running_loop()) is found  # one per loop
        found.opened()
        await found.tick(0.01)
        found.closed()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.run_until_complete(asyncio.sleep(0))
    gone = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert gone() is None  # (and its entry in _pacers with it)


@pytest.mark.parametrize("work", [_spin, _block], ids=["cpu", "blocked"])
def test_a_saturated_loop_turns_busy_then_is_tried_without_pacing_once_it_keeps_up(
    work: Callable[[VirtualLoop], None],
) -> None:
    """A loop kept busy for 0.8 s (by CPU, or by blocking calls that its thread's
    CPU time does not show) turns busy within two windows; a hold (2 s) after its
    last saturated window it is tried without pacing, keeps up, and stays so."""
    window, hold = _pacing.WINDOW, _pacing.HOLD

    async def main() -> None:
        loop = running()
        pacer = _Watched(loop)
        pacer.opened()
        await pacer.windows_pass(1)
        assert not pacer.busy
        start = loop.time()
        _burn(loop, start + 0.8, work)
        await _until(lambda: pacer.busy, 2 * window + 0.05, "busy within two windows")
        assert pacer.engaged == 1
        await _until(lambda: not pacer.busy, 0.8 + hold + 2 * window, "the hold over")
        # held from the last saturated window (the one the load ended in may be less)
        assert loop.time() - start >= 0.8 - window + hold, loop.time() - start
        assert pacer._trying == _pacing.TRY_WINDOWS  # tried without pacing
        await _until(lambda: not pacer._trying, (_pacing.TRY_WINDOWS + 1) * window, "a try")
        assert not pacer.busy and pacer.engaged == 1
        assert pacer._hold == hold  # the try kept up
        await pacer.windows_pass(8)
        assert not pacer.busy and pacer.engaged == 1  # and stays so
        pacer.closed()

    _run(main)


def test_a_loop_that_stays_saturated_is_tried_less_and_less_often() -> None:
    """A load that pacing relieves (a quarter of it while busy) but that saturates
    the loop again at each try: busy for 2 s (the hold), tried, busy for 4 s,
    tried, 8, 16, then 32 s (the most) each time."""

    async def main() -> None:
        loop = running()
        pacer = _Watched(loop)
        pacer.opened()
        done = False

        def load() -> None:  # saturating, or a light load while paced
            if done:
                return
            _spin(loop)
            if pacer.busy:
                loop.call_later(0.06, load)
            else:
                loop.call_soon(load)

        loop.call_soon(load)
        await _until(lambda: pacer.engaged >= 7, 200, "busy seven times")
        done = True
        assert pacer.holds == [2.0, 4.0, 8.0, 16.0, 32.0], pacer.holds
        assert _pacing.MAX_HOLD == 32.0 and pacer._hold == _pacing.MAX_HOLD
        # each time busy for the hold, then tried: the window the hold ends in (each one
        # a little longer than WINDOW: the probe that ends it may be late), then the one
        # that saturates
        gaps = [b - a for a, b in itertools.pairwise(pacer.engaged_at)]
        for gap, hold in zip(gaps, [2.0, 4.0, 8.0, 16.0, 32.0, 32.0], strict=True):
            assert hold <= gap <= hold + 4 * _pacing.WINDOW, (gaps, pacer.holds)
        pacer.closed()
        assert not pacer.busy

    _run(main)


def test_the_tick_releases_its_waiters_together_and_a_cancelled_one_alone() -> None:
    async def main() -> None:
        loop = running()
        pacer = _pacing.Pacer(loop, thread_time=loop.thread_time)
        start = loop.time()
        first = pacer.tick(0.2)
        second = pacer.tick(0.2)
        gone = pacer.tick(0.2)
        sooner = pacer.tick(0.05)  # a shorter delay brings the tick forward
        gone.cancel()
        await first
        assert second.done() and sooner.done() and gone.cancelled()
        assert loop.time() - start == pytest.approx(0.05)  # the soonest, on time
        assert pacer._waiters == [] and pacer._tick is None
        later = pacer.tick(0.05)  # the next tick is a new one
        await later

    _run(main)
