"""The memory figures the settings' defaults rest on: what this process may use
(a container's cgroup limit, else the machine's memory), and the history budget
of one worker (``max_history_bytes``, or a quarter of that memory over the
workers).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._serving import StreamSettings


def available_memory() -> tuple[int, str]:
    """The memory this process may use: its cgroup's limit (a container's) when
    there is one below the machine's, else the machine's; and which it was."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < physical:
            return int(text), "the cgroup's memory limit"
    return physical, "the machine's memory"


def history_budget(settings: StreamSettings, workers: int) -> tuple[int, str]:
    """The bytes of history one worker keeps (``max_history_bytes``, or its
    default), and how that figure was chosen."""
    if settings.max_history_bytes:
        return settings.max_history_bytes, "max_history_bytes"
    memory, source = available_memory()
    budget = max(settings.ring_max_bytes, memory // 4 // max(1, workers))
    return budget, (
        f"a quarter of {memory / 2**30:.1f} GiB ({source}) over {workers} "
        "worker(s); set max_history_bytes to choose"
    )
