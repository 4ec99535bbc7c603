"""The local broker: one worker sequences its own publishes (the default).

Given an ``EventLog`` (``sse-fast serve`` gives one unless ``persistence`` is
``off``), it stores each sequenced batch before delivering it and, at start,
brings back what the log holds (``durable/``): the events into the hub's rings,
the position sequence, the retry memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .._collector import discard, gc_paused
from .._core import EncodeError
from .._tasks import carry_on, stop_task
from ..publishing import PublishError, PublishRequest
from . import Broker
from ._sequencing import RecentIds, first_position, sequence_once
from .durable import EventLog, StoreWriteError
from .durable._restore import (
    RestoreProgress,
    let_go,
    read_stoppably,
    remember_ids,
    restore_gradually,
)

__all__ = [
    "LocalBroker",
]

log = logging.getLogger("sse_fast.storage")


class LocalBroker(Broker):
    """Sequences in this process and delivers at once, synchronously."""

    def __init__(self, store: EventLog | None = None) -> None:
        super().__init__()
        # with a store, both are known once it is read (``start``)
        self.first_position = 0 if store is not None else first_position()
        self.next_position = self.first_position
        self.recent = RecentIds()
        self.store = store
        self.restored = 0
        self._ticker: asyncio.Task[None] | None = None

    @property
    def groups_publishes(self) -> bool:  # type: ignore[override]
        """With a store: one write for the small publishes of a turn (``hub/_publish_group.py``)."""
        return self.store is not None

    async def start(self) -> None:
        """With a store: read it back (events into the hub's rings, the position sequence, the
        retry memory; the files in a thread, the events a chunk at a time: ``progress``) and
        start its periodic work (syncing, deleting dead segments)."""
        store = self.store
        if store is None:
            return
        started = time.perf_counter()
        self.progress = progress = RestoreProgress()
        with gc_paused():  # while the events read back are held (``sse_fast/_collector.py``)
            loaded = await read_stoppably(lambda stop: store.open(stop=stop))
            self.first_position = loaded.first_position
            self.next_position = store.next_position
            self.lost = loaded.lost
            try:
                self.restored = await restore_gradually(
                    self.member, loaded.events, loaded.lost, progress
                )
                ids = await asyncio.to_thread(remember_ids, self.recent, loaded.events)
                await let_go(loaded.events)  # before the collector runs again
            except BaseException:  # a stop meanwhile: freed beside it, still paused
                discard(loaded.events)
                raise
        log.info(
            "data directory %s: %d events restored, %d publisher ids remembered, in %.2f s "
            "(next position %d)",
            store.path,
            self.restored,
            ids,
            time.perf_counter() - started,
            self.next_position,
        )
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        store = self.store
        assert store is not None
        while True:
            await asyncio.sleep(min(1.0, store.interval))
            # (an OSError of a full or failing disk, EMFILE: the next tick tries again)
            with carry_on("the data directory's periodic work (fsync, checkpoint, retention)"):
                await store.tick()

    async def close(self) -> None:
        """Stop the periodic work and close the store, if any."""
        if self._ticker is not None:
            await stop_task(self._ticker)
            self._ticker = None
        if self.store is not None:
            self.store.close()

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """``publish_nowait``, awaitable."""
        return self.publish_nowait(requests, accepted_at)

    def publish_nowait(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """Sequence ``requests`` (repeats of recent ids are not published again), store them,
        deliver them and return their ids; ``PublishError``: 400 for an event that cannot be
        encoded, 503 when the store cannot be written. Nothing is published on error."""
        try:
            items, ids = sequence_once(requests, self.next_position, accepted_at, self.recent)
        except EncodeError as exc:
            raise PublishError(str(exc)) from None
        if items:
            if self.store is not None:
                try:
                    self.store.append(items)
                except StoreWriteError as exc:
                    self.recent.forget_items(items)
                    raise PublishError(
                        str(exc), status=503, retry_after=1.0, reason="storage"
                    ) from None
            self.next_position += len(items)
            self.deliver(items)
        return ids

    def stats(self) -> dict[str, Any]:
        """``/stats``' ``storage`` section (``EventLog.figures``); empty without a store."""
        return {} if self.store is None else {"storage": self.store.figures()}
