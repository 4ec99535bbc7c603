"""sse_fast/_adapters/pacing.py: when an event loop counts as saturated, and the shared tick.

Real loops, real load: a loop that idles never turns busy; one that burns its
thread's CPU does, and so does one whose callbacks block without using CPU
(what a thread that shares its core looks like: only the late probes see it);
busy lasts a hold, then the loop is tried without pacing, and the hold doubles
while the loop stays saturated. The tick releases its waiters together, each
waiter on a future of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sse_fast._adapters import pacing as _pacing
from sse_fast.testing import wait_for

#: the pacer is pure Python and reads only its loop's lateness: the core's mode changes
#: nothing of what is checked, and the timing tests here run alone (once, not twice)
pytestmark = pytest.mark.mode_independent


class _Watched(_pacing.Pacer):
    """A pacer that counts the windows it measured and notes each hold it had."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.windows = 0
        self.holds: list[float] = [self._hold]

    def measure(self, now: float) -> None:
        super().measure(now)
        self.windows += 1
        if self.holds[-1] != self._hold:
            self.holds.append(self._hold)

    async def windows_pass(self, count: int) -> None:
        """Until ``count`` more windows are measured."""
        until = self.windows + count
        await wait_for(lambda: self.windows >= until, timeout=20, what=f"{count} windows")


def _burn(loop: asyncio.AbstractEventLoop, until: float, slice_: Callable[[], None]) -> None:
    """Run ``slice_`` again and again from the loop's ready queue until ``until``:
    the loop is never idle, but timers still get their turn between slices."""

    def again() -> None:
        if loop.time() < until:
            slice_()
            loop.call_soon(again)

    loop.call_soon(again)


def _spin() -> None:  # 20 ms of CPU
    end = time.perf_counter() + 0.02
    while time.perf_counter() < end:
        pass


def _block() -> None:  # 50 ms of the loop's time, no CPU
    time.sleep(0.05)  # pace: the load under test, a callback that blocks


@pytest.fixture
def short_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pacing, "HOLD", 0.3)
    monkeypatch.setattr(_pacing, "MAX_HOLD", 1.2)


@pytest.mark.alone  # the loop's load is measured
def test_an_idle_loop_never_turns_busy_and_the_last_stream_stops_the_probes() -> None:
    async def main() -> None:
        pacer = _Watched(asyncio.get_running_loop())
        pacer.opened()
        pacer.opened()
        await pacer.windows_pass(3)
        assert not pacer.busy and pacer.engaged == 0 and pacer.load < 0.5
        pacer.closed()
        assert pacer._monitor is not None  # one stream still open
        pacer.closed()
        assert pacer._monitor is None and pacer.streams == 0

    asyncio.run(main())


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


@pytest.mark.alone  # the loop's load is measured
@pytest.mark.parametrize("work", [_spin, _block], ids=["cpu", "blocked"])
@pytest.mark.usefixtures("short_hold")
def test_a_saturated_loop_turns_busy_then_is_tried_without_pacing_once_it_keeps_up(
    work: Callable[[], None],
) -> None:
    """A loop kept busy for 0.8 s (by CPU, or by blocking calls that its thread's
    CPU time does not show) turns busy within a window or two; 0.3 s (the hold)
    after the load ends it is tried without pacing, keeps up, and stays so."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pacer = _Watched(loop)
        pacer.opened()
        await pacer.windows_pass(1)
        assert not pacer.busy
        _burn(loop, loop.time() + 0.8, work)
        # (the deadline is the load's: busy while it lasts)
        await wait_for(lambda: pacer.busy, timeout=0.8, what="busy while the load lasts")
        assert pacer.busy and pacer.engaged == 1
        # the load, the hold, then a try (two windows) after which it is not busy
        await wait_for(lambda: not pacer.busy and not pacer._trying, timeout=20, what="a try")
        assert not pacer.busy and pacer.engaged == 1
        assert pacer._trying == 0 and pacer._hold == _pacing.HOLD  # the try kept up
        await pacer.windows_pass(1)
        assert not pacer.busy and pacer.engaged == 1  # and stays so
        pacer.closed()

    asyncio.run(main())


@pytest.mark.alone  # the loop's load is measured
@pytest.mark.usefixtures("short_hold")
def test_a_loop_that_stays_saturated_is_tried_less_and_less_often() -> None:
    """A load that pacing relieves (a quarter of it while busy) but that saturates
    the loop again at each try: busy for 0.3 s, tried, busy for 0.6 s, tried,
    busy for 1.2 s (the most), ..."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pacer = _Watched(loop)
        pacer.opened()
        done = False

        def load() -> None:  # saturating, or a light load while paced
            if done:
                return
            _spin()
            if pacer.busy:
                loop.call_later(0.06, load)
            else:
                loop.call_soon(load)

        loop.call_soon(load)
        await wait_for(lambda: pacer.engaged >= 3, timeout=20, what="busy three times")
        done = True
        holds = pacer.holds
        # 0.3 s, tried (still saturated): 0.6, 1.2, then 1.2 (the most)
        assert holds[:3] == [0.3, 0.6, 1.2], holds
        assert pacer.engaged >= 3  # turned busy again after each try
        pacer.closed()
        assert not pacer.busy

    asyncio.run(main())


@pytest.mark.alone  # the loop's load is measured
def test_the_tick_releases_its_waiters_together_and_a_cancelled_one_alone() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pacer = _pacing.Pacer(loop)
        start = loop.time()
        first = pacer.tick(0.2)
        second = pacer.tick(0.2)
        gone = pacer.tick(0.2)
        sooner = pacer.tick(0.05)  # a shorter delay brings the tick forward
        gone.cancel()
        await first
        assert second.done() and sooner.done() and gone.cancelled()
        assert 0.04 <= loop.time() - start < 0.15
        assert pacer._waiters == [] and pacer._tick is None
        later = pacer.tick(0.05)  # the next tick is a new one
        await later

    asyncio.run(main())
