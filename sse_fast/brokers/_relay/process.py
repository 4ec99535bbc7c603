"""The relay process: one sequencer for all the workers of a server.

It gives every published event its position and id (each frame encoded once),
delivers the frames to every worker in one order, acknowledges the publishing
worker with the ids (the publishes received in one turn of its loop stored in one
write, delivered in one message, each acknowledged), keeps a log of recent events
to replay to a worker that (re)connects, and gathers every worker's figures for
``/metrics`` and ``/stats``. ``run_relay`` is the process's entry point (``serve`` starts it,
``supervisor.py`` keeps it running).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import signal
import time
from typing import Any

from ..._core import EncodeError
from ..._orphans import stop_when_orphaned
from ..._tasks import carry_on
from .._sequencing import RecentIds, Sequenced, first_position, sequence_once
from ..durable import EventLog, StoreWriteError
from ..durable._restore import as_sequenced, remember_ids
from . import wire

__all__ = ["GATHER_TIMEOUT", "REPLAY_CHUNK", "Relay", "run_relay", "serve_relay"]

log = logging.getLogger("sse_fast.relay")

#: events per ``deliver`` message when replaying the log to a joining worker
REPLAY_CHUNK = 1000  # events per deliver message when replaying the log
#: seconds the relay waits for every worker's figures before answering a gather
GATHER_TIMEOUT = 1.0  # seconds the relay waits for every worker's figures
STOP_GRACE = 10.0  # seconds a stopping relay waits for its workers to leave


class _Gather:
    __slots__ = ("figures", "origin", "request", "timer", "waiting")

    def __init__(self, origin: asyncio.StreamWriter, request: int) -> None:
        self.origin = origin
        self.request = request
        self.waiting: set[asyncio.StreamWriter] = set()
        self.figures: list[dict[str, Any]] = []
        self.timer: asyncio.TimerHandle | None = None


class Relay:
    """The sequencer and broadcaster (runs in its own process)."""

    def __init__(
        self,
        history_frames: int = 100_000,
        history_bytes: int = 64 * 1024 * 1024,
        store: EventLog | None = None,
    ) -> None:
        self.store = store
        self.first_position = first_position()
        self.next_position = self.first_position
        self.recent = RecentIds()
        #: workers that said hello, and their slot numbers
        self.workers: dict[asyncio.StreamWriter, int] = {}
        self.history_frames = history_frames
        self.history_bytes = history_bytes
        #: the recent events, contiguous in position (a restarted worker's history)
        self.log: collections.deque[Sequenced] = collections.deque()
        self.log_bytes = 0
        self._gathers: dict[int, _Gather] = {}
        self._gather_ids = itertools.count(1)
        #: connections being handled (workers, and any that did not say hello yet)
        self.connections = 0
        #: publishes sequenced in this turn of the loop, not yet stored: (origin,
        #: request, items, ids)
        self._pending: list[tuple[asyncio.StreamWriter, int, list[Sequenced], list[str]]] = []
        self._pending_items = 0

    def restore(self) -> None:
        """Read the store (``durable/``): the sequence goes on as it was (its first
        position names it, so workers that kept running continue), the newest
        events are the log again, and the retry memory comes back."""
        store = self.store
        if store is None:
            return
        loaded = store.open()
        self.first_position = store.sequence
        self.next_position = store.next_position
        events = loaded.events
        keep = len(events)
        size = 0
        for index in range(len(events) - 1, -1, -1):
            size += len(events[index].frame)
            if len(events) - index > self.history_frames or size > self.history_bytes:
                break
            keep = index
        self._remember(as_sequenced(events[keep:], time.monotonic()))
        ids = remember_ids(self.recent, events)
        log.info(
            "relay: data directory %s: %d events, %d publisher ids remembered (next position %d)",
            store.path,
            len(events),
            ids,
            self.next_position,
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection (a worker's) until it closes: its hello, publishes, gathers,
        figures and pings; then it is dropped from the workers and from the gathers waiting for
        it."""
        self.connections += 1
        try:
            while True:
                message = await wire.receive(reader)
                if isinstance(message, wire.Publish):
                    self.publish(writer, message)
                elif isinstance(message, wire.Hello):
                    self.join(writer, message)
                elif isinstance(message, wire.Gather):
                    self.gather(writer, message)
                elif isinstance(message, wire.Figures):
                    self.collect(writer, message)
                elif isinstance(message, wire.Ping):
                    writer.write(wire.Pong(message.request).pack())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.workers.pop(writer, None)
            for gather in list(self._gathers.values()):
                gather.waiting.discard(writer)
                if not gather.waiting:
                    self._finish(gather)
            writer.close()
            self.connections -= 1

    async def wait_for_workers(self, grace: float) -> None:
        """A stop: the workers first. Under systemd every process of the service
        gets SIGTERM at once; the workers are draining, and go on publishing what
        they may, so the relay waits up to ``grace`` seconds for them to leave,
        then closes what is left (their reads end: no task is cancelled)."""
        deadline = time.monotonic() + grace
        while self.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for writer in list(self.workers):
            writer.close()
        deadline = time.monotonic() + 1.0
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # ---------------------------------------------------------------- joining

    def join(self, writer: asyncio.StreamWriter, hello: wire.Hello) -> None:
        """Welcome a worker; replay the log it needs; deliver to it from now on."""
        sequence = hello.sequence
        last = hello.last_position
        oldest = self.log[0].position if self.log else self.next_position
        continued = (
            last is not None
            and sequence == self.first_position
            and oldest <= last + 1 <= self.next_position
        )
        if continued and last is not None:
            skip_to = last
            history_from = last + 1
        elif last is not None:
            # Its history breaks: it sends its streams a "missed" marker at the
            # position just before history_from, which must be newer than all it
            # holds (a clock that went back must not make this sequence older).
            self.next_position = max(self.next_position, last + 2)
            skip_to = last + 1
            history_from = max(oldest, last + 2)
        else:
            skip_to = -1
            history_from = oldest
        replay = [item for item in self.log if item.position > skip_to]
        if replay:
            history_from = min(history_from, replay[0].position)
        chunks = [replay[i : i + REPLAY_CHUNK] for i in range(0, len(replay), REPLAY_CHUNK)]
        slot = min(set(range(len(self.workers) + 1)) - set(self.workers.values()))
        welcome = wire.Welcome(
            first_position=self.first_position,
            last_position=self.next_position - 1,
            continued=continued,
            history_from=history_from,
            worker=slot,
            replay=len(chunks),
            pid=os.getpid(),
        )
        writer.write(welcome.pack())
        for chunk in chunks:
            writer.write(wire.Deliver(chunk).pack())
        self.workers[writer] = slot

    # ---------------------------------------------------------------- publishing

    def publish(self, origin: asyncio.StreamWriter, message: wire.Publish) -> None:
        """Sequence a worker's publish message; the publishes of one turn of the loop are
        stored together (one write when there is a data directory) at its end, then
        delivered to every worker in one message and each ``origin`` answered with its ids
        (``publish_pending``). An event that cannot be encoded publishes nothing of its
        message and is answered with an ``error``; a store that cannot be written fails every
        message of the turn (503)."""
        position = self.next_position + self._pending_items
        try:
            items, ids = sequence_once(message.requests, position, message.accepted_at, self.recent)
        except EncodeError as exc:
            origin.write(wire.Refused(message.request, str(exc)).pack())
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.publish_pending)
        self._pending.append((origin, message.request, items, ids))
        self._pending_items += len(items)

    def publish_pending(self) -> None:
        """Store, deliver and acknowledge the publishes sequenced in this turn (see
        ``publish``)."""
        pending, self._pending = self._pending, []
        self._pending_items = 0
        items = [item for _, _, some, _ in pending for item in some]
        if items and self.store is not None:
            try:
                self.store.append(items)  # before anyone sees them
            except StoreWriteError as exc:
                self.recent.forget_items(items)
                for origin, request, _, _ in pending:
                    origin.write(wire.Refused(request, str(exc), 503, "storage").pack())
                return
        self.next_position += len(items)
        if items:
            self._remember(items)
            message = wire.Deliver(items).pack()
            for worker in self.workers:
                worker.write(message)
        for origin, request, _, ids in pending:
            origin.write(wire.Ack(request, ids).pack())

    def _remember(self, items: list[Sequenced]) -> None:
        log = self.log
        log.extend(items)
        self.log_bytes += sum(len(i.frame) for i in items)
        while log and (len(log) > self.history_frames or self.log_bytes > self.history_bytes):
            self.log_bytes -= len(log.popleft().frame)

    # ---------------------------------------------------------------- figures

    def gather(self, origin: asyncio.StreamWriter, asked: wire.Gather) -> None:
        """Ask every worker for its figures (``report``); ``origin`` gets them (``gathered``) once
        all answered or after ``GATHER_TIMEOUT`` seconds."""
        gather = _Gather(origin, asked.request)
        gather_id = next(self._gather_ids)
        message = wire.Report(gather_id, asked.query).pack()
        for worker in self.workers:
            worker.write(message)
            gather.waiting.add(worker)
        self._gathers[gather_id] = gather
        if not gather.waiting:
            self._finish(gather)
            return
        gather.timer = asyncio.get_running_loop().call_later(GATHER_TIMEOUT, self._finish, gather)

    def collect(self, writer: asyncio.StreamWriter, answer: wire.Figures) -> None:
        """Take a worker's ``figures`` for its gather (ignored once that gather was answered); the
        last one awaited answers it."""
        gather = self._gathers.get(answer.gather)
        if gather is None or writer not in gather.waiting:
            return  # too late: that answer went out without it
        gather.waiting.discard(writer)
        gather.figures.append({**answer.figures, "worker": self.workers.get(writer)})
        if not gather.waiting:
            self._finish(gather)

    def _finish(self, gather: _Gather) -> None:
        for gather_id, known in list(self._gathers.items()):
            if known is gather:
                del self._gathers[gather_id]
        if gather.timer is not None:
            gather.timer.cancel()
        if not gather.origin.is_closing():
            gather.origin.write(wire.Gathered(gather.request, gather.figures).pack())


async def serve_relay(
    path: str,
    ready: Any = None,
    history_frames: int = 100_000,
    history_bytes: int = 64 * 1024 * 1024,
    store: dict[str, Any] | None = None,
) -> None:
    """Serve the relay on ``path`` until SIGTERM; ``store``: ``EventLog``'s
    arguments when the events are kept on disk (read before it listens)."""
    relay = Relay(history_frames, history_bytes, EventLog(**store) if store else None)
    relay.restore()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = await asyncio.start_unix_server(relay.handle, path=path)
    os.chmod(path, 0o600)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    ticker = loop.create_task(_tick(relay.store)) if relay.store is not None else None
    if ready is not None:
        ready.set()
    try:
        async with server:
            await stopping.wait()
            server.close()  # no new connection; the workers still connected may finish
            await relay.wait_for_workers(STOP_GRACE)
    finally:
        if ticker is not None:
            ticker.cancel()
        relay.publish_pending()  # a turn's publishes not yet stored: stored and answered
        if relay.store is not None:
            relay.store.close()  # a clean stop: the next start goes on from here


async def _tick(store: EventLog) -> None:
    while True:
        await asyncio.sleep(min(1.0, store.interval))
        with carry_on("relay: the data directory's periodic work (fsync, checkpoint, retention)"):
            await store.tick()


def run_relay(
    path: str,
    ready: Any = None,
    history_frames: int = 100_000,
    history_bytes: int = 64 * 1024 * 1024,
    store: dict[str, Any] | None = None,
    main_pid: int = 0,
) -> None:
    """Process entry point; the relay stops when ``main_pid`` (serve's main process,
    its parent) is gone (``sse_fast/_orphans.py``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us after the workers
    stop_when_orphaned(main_pid, "relay")
    try:
        import uvloop

        uvloop.run(serve_relay(path, ready, history_frames, history_bytes, store))
    except ImportError:  # pragma: no cover
        asyncio.run(serve_relay(path, ready, history_frames, history_bytes, store))
