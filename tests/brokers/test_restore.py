"""A start's restore of the data directory, in process (``brokers/durable/_restore.py``):
the segments read a slice at a time, a reader that is stopped gives up, a cancelled
restore stops its thread, and the cyclic collector is paused while the events read
back are held. The same with real servers: ``tests/e2e/test_start.py``."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import pytest

from sse_fast.brokers._sequencing import Sequenced
from sse_fast.brokers.durable import EventLog, read
from sse_fast.brokers.durable import _records as durable_records
from sse_fast.brokers.durable._restore import (
    ReadStopped,
    RestoreProgress,
    read_into,
    read_stoppably,
)
from sse_fast.brokers.local import LocalBroker
from sse_fast.hub import Hub
from sse_fast.settings import Settings

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


def test_a_cancelled_read_stops_its_thread_before_it_returns() -> None:
    """A worker stopped while it reads its history: the thread is not left reading
    (the process would wait for it at its exit)."""
    started, finished = threading.Event(), threading.Event()

    def reading(stop: threading.Event) -> int:
        started.set()
        try:
            if stop.wait(30):  # a long read, until told to stop
                raise ReadStopped("stopped")
            return 1
        finally:
            finished.set()

    async def main() -> None:
        task = asyncio.create_task(read_stoppably(reading))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()  # waited for, not left behind

    asyncio.run(main())


def test_the_collector_is_paused_while_the_history_is_restored(stored: Path) -> None:
    """Its full collections over the events read back stalled a worker's loop for
    seconds; it runs again once they are let go, as it was before."""
    seen: list[bool] = []

    class Watched(LocalBroker):
        def deliver(self, items: list[Sequenced]) -> None:
            seen.append(gc.isenabled())
            super().deliver(items)

    async def main() -> None:
        settings = Settings(install_signal_handlers=False)
        hub = Hub(settings, broker=Watched())
        await hub.start()
        progress = RestoreProgress()
        loaded = await read_into(hub.broker, str(stored), progress)
        assert progress.applied == progress.total == EVENTS
        assert loaded.count == EVENTS and loaded.events == []  # let go once applied
        assert gc.isenabled()
        await hub.stop()

    assert gc.isenabled()
    asyncio.run(main())
    assert seen and not any(seen)
