"""A data directory whose writes a test can count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sse_fast.brokers.durable import EventLog


def counted_store(path: Path) -> tuple[EventLog, list[int]]:
    """An ``EventLog`` on ``path`` (no syncing) and the sizes of its appends, in order, as
    they succeed: how many writes the publishes made."""
    store = EventLog(str(path), fsync="never")
    appends: list[int] = []
    real = store.append

    def append(items: Any) -> None:
        real(items)
        appends.append(len(items))

    store.append = append  # type: ignore[method-assign]
    return store, appends
