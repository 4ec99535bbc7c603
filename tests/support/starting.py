"""A server caught while it starts: a data directory whose restore takes seconds, and a
``ServerProcess`` returned as soon as ``/livez`` answers (tests/e2e/test_start.py, the
locust users' come-back in tests/tools/test_locust_any_server.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sse_fast.brokers._sequencing import Sequenced
from sse_fast.brokers.durable import EventLog
from sse_fast.testing import ServerProcess

__all__ = ["EVENTS", "PER_TOPIC", "StartingServer", "fill_history"]

#: events in the data directory: a restore of seconds (about 7 µs per event per worker)
EVENTS = 500_000
#: events per topic: all of them kept by a ring (ring_max_frames 1024 by default)
PER_TOPIC = 1000


def fill_history(path: Path, events: int = EVENTS) -> None:
    """``events`` events on disk, ``PER_TOPIC`` a topic: topic ``t<k>`` holds ids
    ``e<k*PER_TOPIC>`` and on (0.76 s a million, measured)."""
    log = EventLog(str(path), fsync="never", max_bytes=1 << 32)
    log.open()
    first = log.next_position
    for start in range(0, events, PER_TOPIC):  # a topic at a time
        topics = (f"t{start // PER_TOPIC}",)
        log.append(
            [
                Sequenced(first + n, f"e{n}", topics, b"id: e%d\ndata: %d\n\n" % (n, n), 0.0)
                for n in range(start, min(events, start + PER_TOPIC))
            ]
        )
    log.close()


class StartingServer(ServerProcess):
    """A server returned by ``with`` as soon as ``/livez`` answers: the test
    watches the rest of its start."""

    def __init__(self, *args: str, **env: Any) -> None:
        super().__init__(*args, ready_path="/livez", ready_timeout=30, **env)

    def _all_workers_ready(self, deadline: float) -> bool:
        return True
