"""A start's restore of the data directory, in process (``brokers/durable/_restore.py``):
the segments read a slice at a time, a reader that is stopped gives up, a cancelled
restore tells its thread to stop and does not wait for it, and the cyclic collector
is paused while the events read back are held. The same with real servers:
``tests/e2e/test_start.py``."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from sse_fast._collector import gc_paused
from sse_fast.brokers._sequencing import Sequenced
from sse_fast.brokers.durable import EventLog, read
from sse_fast.brokers.durable import _records as durable_records
from sse_fast.brokers.durable._reading import Loaded
from sse_fast.brokers.durable._records import Event, StoreError
from sse_fast.brokers.durable._restore import (
    ReadStopped,
    RestoreProgress,
    read_into,
    read_stoppably,
)
from sse_fast.hub import Hub
from sse_fast.settings import Settings
from sse_fast.testing import wait_for

EVENTS = 2_000


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A data directory of ``EVENTS`` events, ten topics."""
    log = EventLog(str(tmp_path), fsync="never")
    log.open()
    first = log.next_position
    log.append(
        [
            Sequenced(first + n, f"e{n}", (f"t{n % 10}",), f"id: e{n}\ndata: {n}\n\n".encode(), 0.0)
            for n in range(EVENTS)
        ]
    )
    log.close()
    return tmp_path


def test_a_segment_read_in_slices_gives_what_it_holds_whole(
    stored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = read(str(stored))
    monkeypatch.setattr(durable_records, "SCAN_SLICE", 100)  # a record or two at a time
    sliced = read(str(stored))
    assert len(sliced.events) == EVENTS
    assert sliced == whole


def test_a_reader_told_to_stop_gives_up(stored: Path) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(ReadStopped, match="was stopped"):
        read(str(stored), stop=stop)


def test_a_cancelled_read_returns_at_once_and_its_thread_stops_beside_it() -> None:
    """A worker stopped while it reads its history: the cancellation does not wait for
    the thread (its freeing of what it read held a stopping worker 0.9 s), the thread
    is told to stop, is a daemon (the process's exit does not wait for it either),
    and the collector stays paused until it has ended."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    told: list[bool] = []
    threads: list[threading.Thread] = []

    def reading(stop: threading.Event) -> Loaded:
        threads.append(threading.current_thread())
        started.set()
        try:
            release.wait(30)  # freeing what it read: the test says when it is done
            told.append(stop.is_set())
            raise ReadStopped("stopped")
        finally:
            finished.set()

    async def main() -> None:
        task = asyncio.create_task(read_stoppably(reading))
        assert await asyncio.to_thread(started.wait, 10)
        assert not gc.isenabled()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not finished.is_set()  # returned at once: not waited for
        assert threads[0].daemon
        assert not gc.isenabled()  # paused while the thread holds what it read
        release.set()
        assert await asyncio.to_thread(finished.wait, 10)
        await asyncio.to_thread(threads[0].join, 10)
        assert told == [True]
        assert gc.isenabled()

    assert gc.isenabled()
    asyncio.run(main())


def test_a_reading_that_fails_says_why() -> None:
    def reading(stop: threading.Event) -> Loaded:
        raise StoreError("the data directory is damaged")

    async def main() -> None:
        with pytest.raises(StoreError, match="damaged"):
            await read_stoppably(reading)
        assert gc.isenabled()

    asyncio.run(main())


def test_a_reading_that_ends_as_it_is_cancelled_is_discarded_beside_it() -> None:
    """The thread finished its reading just as the worker stopped: what it read is
    freed in a thread of its own, not by the event loop in one step."""
    finishing, cancelled = threading.Event(), threading.Event()
    events = [object() for _ in range(3)]
    loaded = Loaded(events=cast("list[Event]", events))
    freed_in: list[str] = []

    class Watched(list):  # type: ignore[type-arg]
        def __delitem__(self, key: object) -> None:
            freed_in.append(threading.current_thread().name)
            super().__delitem__(key)  # type: ignore[arg-type]

    loaded.events = Watched(events)

    def reading(stop: threading.Event) -> Loaded:
        finishing.set()
        cancelled.wait(30)
        return loaded

    async def main() -> None:
        task = asyncio.create_task(read_stoppably(reading))
        assert await asyncio.to_thread(finishing.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled.set()

        async def freed() -> bool:
            return not loaded.events and not _discarding()

        await wait_for(freed, timeout=10)
        assert freed_in and set(freed_in) == {"sse-fast-discard"}
        assert gc.isenabled()

    asyncio.run(main())


def _discarding() -> bool:
    return any(t.name in {"sse-fast-discard", "sse-fast-read"} for t in threading.enumerate())


def test_the_collector_is_paused_while_the_history_is_restored(stored: Path) -> None:
    """Its full collections over the events read back stalled a worker's loop for
    seconds; it runs again once they are let go, as it was before."""
    seen: list[bool] = []

    class Watched(Hub):
        def apply(self, items: Sequence[Sequenced]) -> None:
            seen.append(gc.isenabled())
            super().apply(items)

    async def main() -> None:
        settings = Settings()
        hub = Watched(settings)
        await hub.start()
        progress = RestoreProgress()
        told: list[int] = []  # how many events the reading held when it was told

        def read(loaded: Loaded) -> None:
            told.append(len(loaded.events))

        loaded = await read_into(hub, str(stored), progress, read)
        assert told == [EVENTS]  # told before they were applied and let go
        assert progress.applied == progress.total == EVENTS
        assert loaded.count == EVENTS and loaded.events == []  # let go once applied
        assert gc.isenabled()
        await hub.stop()

    assert gc.isenabled()
    asyncio.run(main())
    assert seen and not any(seen)


def test_collector_pauses_nest_and_end_in_any_thread() -> None:
    """The collector runs again when the last pause ends, as it was before the first;
    ``discard`` holds one until its thread has freed the list."""
    from sse_fast._collector import discard, pause, resume

    assert gc.isenabled()
    pause()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the first pause still holds
    ended = threading.Thread(target=resume)  # ended elsewhere, as a reading thread does
    ended.start()
    ended.join()
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="without pause"):
        resume()
    gc.disable()  # a host application's choice is kept
    with gc_paused():
        pass
    assert not gc.isenabled()
    gc.enable()

    held = threading.Event()

    class Slow(list):  # type: ignore[type-arg]
        def __delitem__(self, key: object) -> None:
            held.wait(10)
            super().__delitem__(key)  # type: ignore[arg-type]

    items = Slow(range(25_000))
    thread = discard(items)
    assert thread is not None and thread.daemon
    assert not gc.isenabled()  # paused while it frees
    held.set()
    thread.join(10)
    assert items == [] and gc.isenabled()
    assert discard([]) is None and gc.isenabled()


def test_a_reader_stopped_in_a_later_segment_frees_the_earlier_ones_a_slice_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped in the middle of the directory, not at its start: the segments already
    read are freed a slice at a time (one step held a stopping worker 0.93 s), as is
    the part of the segment being read."""
    from sse_fast.brokers.durable import _reading as durable_reading

    log = EventLog(str(tmp_path), fsync="never", segment_bytes=4096)
    log.open()
    first = log.next_position
    for n in range(0, EVENTS, 100):
        log.append(
            [
                Sequenced(first + k, f"e{k}", ("t",), f"id: e{k}\ndata: {k}\n\n".encode(), 0.0)
                for k in range(n, n + 100)
            ]
        )
    log.close()
    segments = len(list(tmp_path.glob("*.log")))
    assert segments >= 3, segments
    freed: list[int] = []

    def watched(items: list[Any], step: int = 10_000) -> None:
        freed.append(len(items))
        items.clear()

    monkeypatch.setattr(durable_reading, "free_gradually", watched)
    monkeypatch.setattr(durable_records, "free_gradually", watched)

    class StopInThirdSegment(threading.Event):
        """Set once the third segment's reading has begun."""

        def is_set(self) -> bool:
            return len(scanned) >= 3

    scanned: list[str] = []
    scan = durable_reading.scan

    def counting_scan(data: bytes, name: str, *args: Any) -> Any:
        scanned.append(name)
        return scan(data, name, *args)

    monkeypatch.setattr(durable_reading, "scan", counting_scan)
    with pytest.raises(ReadStopped):
        read(str(tmp_path), stop=StopInThirdSegment())
    assert len(scanned) == 3
    # the third segment's part (none yet: stopped at its first slice), then the two before
    assert freed[0] == 0 and len(freed) == 3 and all(n > 0 for n in freed[1:]), freed
