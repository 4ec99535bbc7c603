"""The relay broker: several workers of one server, one sequencer process.

With ``--workers N`` the ``serve`` command starts the relay (``run_relay``) on
a Unix socket before Granian starts its workers, and its main process keeps it
running (``RelaySupervisor``: a relay that dies is started again, with
backoff). Each worker's hub has a ``RelayBroker`` that connects at lifespan
startup. A worker that accepts ``POST /publish`` validates the events and
sends them to the relay; the relay sequences them (positions, ids, each frame
encoded once) and delivers the encoded frames to all workers (the publishing
one included) in one order, then acknowledges with the ids. Every worker thus
holds identical rings, so ``Last-Event-ID`` resumes on whichever worker a
client reconnects to. No external service is involved.

The promises are those of the broker contract (``brokers/__init__.py``):

* A worker that starts (first start, or respawned after a crash) is replayed
  the relay's log of recent events (``relay_history_frames`` /
  ``relay_history_bytes``) before it serves, and claims history from the
  oldest event replayed.
* A worker that loses the relay keeps its streams open, refuses publishes with
  503 and ``Retry-After``, and reconnects (backoff up to a second). If the
  relay is the same one and its log reaches back to the worker's newest
  position, the worker is replayed what it missed and nothing is lost. If the
  relay was restarted (a new sequence) or its log does not reach back, the
  worker's claims restart where the relay's replay starts, and its open
  streams are sent ``sse-fast-missed`` (``relay-restarted`` or
  ``relay-log-too-short``) in place.
* ``/metrics`` and ``/stats`` gather every worker's figures through the relay.

Wire format (both directions): ``!II`` total length and header length, a JSON
header (orjson), then raw frame bytes for deliveries. Headers, by ``type``:

* ``hello`` (worker -> relay): ``sequence`` (the ``first_position`` of the
  sequence the worker was in, or null) and ``last_position`` (the newest
  position it applied, or null). Answered by ``welcome``: ``first_position``
  (the relay's sequence), ``last_position`` (the newest position it gave
  out), ``continued`` (true: the worker's history goes on unbroken),
  ``history_from`` (where the worker's claims start when not continued),
  ``worker`` (a slot number, stable across a worker's respawn, for metric
  labels), ``pid`` (the relay's) and ``replay`` (how many ``deliver`` messages of the log follow);
* ``publish`` (worker -> relay): ``request`` (the worker's number for it),
  ``accepted_at`` and ``events``: ``[topics, data, event, id, retry]`` each,
  data pre-serialised JSON (or text);
* ``deliver`` (relay -> every worker): ``events``: ``[position, id, topics,
  accepted_at, size]`` each, the frames concatenated after the header;
* ``ack`` (relay -> publishing worker): ``request``, ``ids``; or ``error``:
  ``request``, ``message`` (an event could not be encoded: nothing published);
* ``gather`` (worker -> relay): ``request``, ``query``; the relay sends
  ``report`` (``gather``, ``query``) to every worker, each answers ``figures``
  (``gather``, ``figures``), and the asking worker gets ``gathered``
  (``request``, ``figures``: a list, each with its ``worker`` slot) once all
  answered or after ``GATHER_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import struct
import time
from typing import Any

import orjson

from .._core import EncodeError
from .._tasks import stop_task
from ..protocol import Reason
from ..publishing import PublishError, PublishRequest
from . import Broker
from .sequencing import RecentIds, Sequenced, first_position, make_frame, sequence_once

__all__ = [
    "GATHER_TIMEOUT",
    "MAX_MESSAGE",
    "RECONNECT_MAX_DELAY",
    "REPLAY_CHUNK",
    "RETRY_AFTER",
    "Relay",
    "RelayBroker",
    "pack",
    "pack_delivery",
    "pack_publish",
    "read_message",
    "run_relay",
    "serve_relay",
    "unpack_delivery",
]

log = logging.getLogger("sse_fast.relay")

_PREFIX = struct.Struct("!II")
MAX_MESSAGE = 256 * 1024 * 1024
RETRY_AFTER = 1.0  # seconds, when the relay is unreachable
REPLAY_CHUNK = 1000  # events per deliver message when replaying the log
GATHER_TIMEOUT = 1.0  # seconds the relay waits for every worker's figures
RECONNECT_MAX_DELAY = 1.0  # seconds between a worker's attempts to reach the relay, at most


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return _PREFIX.pack(len(head) + len(payload), len(head)) + head + payload


async def read_message(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    total, head_size = _PREFIX.unpack(await reader.readexactly(_PREFIX.size))
    if total > MAX_MESSAGE or head_size > total:
        raise ConnectionError(f"relay message of {total} bytes is malformed or too large")
    body = await reader.readexactly(total)
    return orjson.loads(body[:head_size]), body[head_size:]


def _wire_data(data: Any) -> Any:
    """An event's data as it travels to the relay: text as is, anything else as
    JSON serialised here (an ``orjson.Fragment``), so the relay message adds no
    nesting to it and data one worker accepts is accepted by several."""
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8")  # bytes are UTF-8 text, as for encode()
    return orjson.Fragment(orjson.dumps(data))


def pack_publish(request_id: int, requests: list[PublishRequest], accepted_at: float) -> bytes:
    """A worker's publish message; raises ``PublishError`` (400) for events that
    cannot be encoded, with the encoder's own explanation."""
    try:
        return pack(
            {
                "type": "publish",
                "request": request_id,
                "accepted_at": accepted_at,
                "events": [
                    [r.topics, _wire_data(r.data), r.event, r.id, r.retry] for r in requests
                ],
            }
        )
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError, UnicodeDecodeError
        for request in requests:
            try:
                make_frame(request, "0")
            except EncodeError as reason:
                raise PublishError(str(reason)) from None
        raise PublishError(f"this event cannot be published: {exc}") from None


def pack_delivery(items: list[Sequenced]) -> bytes:
    header = {
        "type": "deliver",
        "events": [[i.position, i.id, i.topics, i.accepted_at, len(i.frame)] for i in items],
    }
    return pack(header, b"".join(i.frame for i in items))


def unpack_delivery(header: dict[str, Any], payload: bytes) -> list[Sequenced]:
    items = []
    offset = 0
    for position, event_id, topics, accepted_at, size in header["events"]:
        items.append(
            Sequenced(
                position, event_id, tuple(topics), payload[offset : offset + size], accepted_at
            )
        )
        offset += size
    return items


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
        self, history_frames: int = 100_000, history_bytes: int = 64 * 1024 * 1024
    ) -> None:
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

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header, _ = await read_message(reader)
                kind = header["type"]
                if kind == "publish":
                    self.publish(writer, header)
                elif kind == "hello":
                    self.join(writer, header)
                elif kind == "gather":
                    self.gather(writer, header)
                elif kind == "figures":
                    self.collect(writer, header)
                elif kind == "ping":
                    writer.write(pack({"type": "pong", "request": header["request"]}))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.workers.pop(writer, None)
            for gather in list(self._gathers.values()):
                gather.waiting.discard(writer)
                if not gather.waiting:
                    self._finish(gather)
            writer.close()

    # ---------------------------------------------------------------- joining

    def join(self, writer: asyncio.StreamWriter, header: dict[str, Any]) -> None:
        """Welcome a worker; replay the log it needs; deliver to it from now on."""
        sequence: int | None = header.get("sequence")
        last: int | None = header.get("last_position")
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
        writer.write(
            pack(
                {
                    "type": "welcome",
                    "first_position": self.first_position,
                    "last_position": self.next_position - 1,
                    "continued": continued,
                    "history_from": history_from,
                    "worker": slot,
                    "replay": len(chunks),
                    "pid": os.getpid(),
                }
            )
        )
        for chunk in chunks:
            writer.write(pack_delivery(chunk))
        self.workers[writer] = slot

    # ---------------------------------------------------------------- publishing

    def publish(self, origin: asyncio.StreamWriter, header: dict[str, Any]) -> None:
        requests = [PublishRequest(tuple(t), d, e, i, r) for t, d, e, i, r in header["events"]]
        try:
            items, ids = sequence_once(
                requests, self.next_position, header["accepted_at"], self.recent
            )
        except EncodeError as exc:
            origin.write(pack({"type": "error", "request": header["request"], "message": str(exc)}))
            return
        self.next_position += len(items)
        if items:
            self._remember(items)
            message = pack_delivery(items)
            for worker in self.workers:
                worker.write(message)
        origin.write(pack({"type": "ack", "request": header["request"], "ids": ids}))

    def _remember(self, items: list[Sequenced]) -> None:
        log = self.log
        log.extend(items)
        self.log_bytes += sum(len(i.frame) for i in items)
        while log and (len(log) > self.history_frames or self.log_bytes > self.history_bytes):
            self.log_bytes -= len(log.popleft().frame)

    # ---------------------------------------------------------------- figures

    def gather(self, origin: asyncio.StreamWriter, header: dict[str, Any]) -> None:
        gather = _Gather(origin, header["request"])
        gather_id = next(self._gather_ids)
        message = pack({"type": "report", "gather": gather_id, "query": header["query"]})
        for worker in self.workers:
            worker.write(message)
            gather.waiting.add(worker)
        self._gathers[gather_id] = gather
        if not gather.waiting:
            self._finish(gather)
            return
        gather.timer = asyncio.get_running_loop().call_later(GATHER_TIMEOUT, self._finish, gather)

    def collect(self, writer: asyncio.StreamWriter, header: dict[str, Any]) -> None:
        gather = self._gathers.get(header["gather"])
        if gather is None or writer not in gather.waiting:
            return  # too late: that answer went out without it
        gather.waiting.discard(writer)
        gather.figures.append({**header["figures"], "worker": self.workers.get(writer)})
        if not gather.waiting:
            self._finish(gather)

    def _finish(self, gather: _Gather) -> None:
        for gather_id, known in list(self._gathers.items()):
            if known is gather:
                del self._gathers[gather_id]
        if gather.timer is not None:
            gather.timer.cancel()
        if not gather.origin.is_closing():
            gather.origin.write(
                pack({"type": "gathered", "request": gather.request, "figures": gather.figures})
            )


async def serve_relay(
    path: str,
    ready: Any = None,
    history_frames: int = 100_000,
    history_bytes: int = 64 * 1024 * 1024,
) -> None:
    relay = Relay(history_frames, history_bytes)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = await asyncio.start_unix_server(relay.handle, path=path)
    os.chmod(path, 0o600)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def run_relay(
    path: str,
    ready: Any = None,
    history_frames: int = 100_000,
    history_bytes: int = 64 * 1024 * 1024,
) -> None:
    """Process entry point."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us after the workers
    try:
        import uvloop

        uvloop.run(serve_relay(path, ready, history_frames, history_bytes))
    except ImportError:  # pragma: no cover
        asyncio.run(serve_relay(path, ready, history_frames, history_bytes))


class RelayBroker(Broker):
    """A worker's connection to the relay; reconnects by itself when it is lost."""

    def __init__(self, path: str, connect_timeout: float = 10.0, keepalive: float = 2.0) -> None:
        super().__init__()
        self.path = path
        self.connect_timeout = connect_timeout
        #: seconds between pings; a relay that answers none within twice that
        #: (stopped, hung) is dropped and reconnected to, like a dead one
        self.keepalive = keepalive
        # Known once connected; until then nothing is delivered and nothing claimed.
        self.first_position = 0
        #: the relay's sequence this worker is in (its first position), once joined
        self.sequence: int | None = None
        #: this worker's slot number at the relay (a metric label)
        self.worker: int | None = None
        self.connected = False
        self.reconnects = 0
        self.history_breaks = 0
        #: the relay process (``/stats``)
        self.relay_pid: int | None = None
        self._down_since: float | None = time.monotonic()
        self._closing = False
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        #: publishes sent and not answered yet; other requests (gather, ping)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._asks: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- connecting

    async def start(self) -> None:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                reader = await self._connect()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot reach the relay at {self.path}") from None
                await asyncio.sleep(0.05)
        self._task = asyncio.get_running_loop().create_task(self._run(reader))

    async def _connect(self) -> asyncio.StreamReader:
        """Connect, say hello, apply the welcome and the replayed log."""
        reader, writer = await asyncio.open_unix_connection(self.path)
        try:
            member = self.member
            rejoining = self.sequence is not None
            writer.write(
                pack(
                    {
                        "type": "hello",
                        "sequence": self.sequence,
                        "last_position": member.last_position if rejoining else None,
                    }
                )
            )
            welcome, _ = await asyncio.wait_for(read_message(reader), self.keepalive * 2)
            if welcome.get("type") != "welcome":
                raise ConnectionError(f"the relay answered hello with {welcome.get('type')!r}")
            if not welcome["continued"]:
                if rejoining:
                    reason = (
                        Reason.RELAY_RESTARTED
                        if welcome["first_position"] != self.sequence
                        else Reason.RELAY_LOG_TOO_SHORT
                    )
                    self.history_breaks += 1
                    log.warning(
                        "rejoined the relay without the events since position %d (%s): "
                        "open streams are told they may have missed events",
                        member.last_position,
                        reason,
                    )
                else:
                    reason = None
                # the broker contract's "History claims" and "Breaks are said"
                self.first_position = welcome["history_from"]
                member.rejoined(welcome["history_from"], reason)
            self.sequence = welcome["first_position"]
            self.worker = welcome["worker"]
            self.relay_pid = welcome.get("pid")
            for _ in range(welcome["replay"]):
                header, payload = await read_message(reader)
                self.deliver(unpack_delivery(header, payload))
        except BaseException:
            writer.close()
            raise
        self._writer = writer
        self.connected = True
        self._down_since = None
        return reader

    async def _run(self, reader: asyncio.StreamReader) -> None:
        """Read from the relay; when the connection is lost, reconnect."""
        while True:
            pinger = asyncio.get_running_loop().create_task(self._ping())
            try:
                await self._read_loop(reader)
            finally:
                pinger.cancel()
            if self._closing:
                return
            delay = 0.05
            while True:
                await asyncio.sleep(delay)
                try:
                    reader = await self._connect()
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                    delay = min(delay * 2, RECONNECT_MAX_DELAY)
                    continue
                self.reconnects += 1
                log.warning("reconnected to the relay: publishing is available again")
                break

    async def _ping(self) -> None:
        """Drop a connection whose relay stopped answering (its socket stays open)."""
        while True:
            await asyncio.sleep(self.keepalive)
            try:
                await asyncio.wait_for(self._request({"type": "ping"}), self.keepalive * 2)
            except asyncio.TimeoutError:
                log.error(
                    "the relay answered no ping for %g s: dropping the connection",
                    self.keepalive * 2,
                )
                if self._writer is not None:
                    self._writer.transport.abort()
                return
            except PublishError:  # not connected: the read loop is ending
                return

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, payload = await read_message(reader)
                kind = header["type"]
                if kind == "deliver":
                    self.deliver(unpack_delivery(header, payload))
                elif kind == "report":
                    self._answer_report(header)
                elif kind in ("ack", "error", "gathered", "pong"):
                    future = self._pending.pop(header["request"], None) or self._asks.pop(
                        header["request"], None
                    )
                    if future is not None and not future.done():
                        if kind == "ack":
                            future.set_result(header["ids"])
                        elif kind == "gathered":
                            future.set_result(header["figures"])
                        elif kind == "pong":
                            future.set_result(None)
                        else:
                            future.set_exception(PublishError(header["message"]))
        except (asyncio.IncompleteReadError, ConnectionError):
            if not self._closing:
                log.error(
                    "lost the relay connection: publishing is unavailable on this worker "
                    "until it is back (reconnecting)"
                )
        finally:
            self.connected = False
            if self._down_since is None:
                self._down_since = time.monotonic()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for future in [*self._pending.values(), *self._asks.values()]:
                if not future.done():
                    future.set_exception(
                        PublishError(
                            "the relay connection was lost before this publish was "
                            "acknowledged: it may or may not have been published (give "
                            "events ids to recognise them on retry)",
                            status=503,
                            retry_after=RETRY_AFTER,
                        )
                    )
            self._pending.clear()
            self._asks.clear()

    def _answer_report(self, header: dict[str, Any]) -> None:
        try:
            figures = self.member.report(header["query"])
        except Exception:  # pragma: no cover - a bug; the gather times out without us
            log.exception("cannot report figures")
            return
        if self._writer is not None:
            self._writer.write(
                pack({"type": "figures", "gather": header["gather"], "figures": figures})
            )

    # ---------------------------------------------------------------- state

    @property
    def available(self) -> bool:
        return self.connected

    @property
    def unavailable_for(self) -> float:
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    @property
    def pending(self) -> int:
        """Publishes sent to the relay and not answered yet."""
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        return {
            "relay": {
                "connected": self.connected,
                "pid": self.relay_pid,
                "pending": self.pending,
                "reconnects": self.reconnects,
                "history_breaks": self.history_breaks,
            }
        }

    # ---------------------------------------------------------------- requests

    def _request(self, header: dict[str, Any], payload: bytes = b"") -> asyncio.Future[Any]:
        if not self.connected or self._writer is None:
            raise PublishError(
                "relay unavailable; try again shortly", status=503, retry_after=RETRY_AFTER
            )
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._asks[request_id] = future
        self._writer.write(pack({**header, "request": request_id}, payload))
        return future

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        if not self.connected or self._writer is None:
            raise PublishError(
                "relay unavailable; try again shortly", status=503, retry_after=RETRY_AFTER
            )
        # No pre-check here: the relay encodes the whole batch before sequencing
        # any of it and answers "error" on EncodeError, so nothing is half-published
        # and each frame is encoded once. Only what cannot even be put on the wire
        # is refused here, with the same answer one worker gives.
        request_id = next(self._ids)
        message = pack_publish(request_id, requests, accepted_at)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._writer.write(message)
        return await future

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker's figures through the relay; this worker's alone (with
        ``"worker": None``) while the relay is away."""
        try:
            future = self._request({"type": "gather", "query": query})
            return list(await asyncio.wait_for(future, GATHER_TIMEOUT * 3))
        except (PublishError, asyncio.TimeoutError):
            return [{**self.member.report(query), "worker": self.worker}]

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            await stop_task(self._task)
        if self._writer is not None:
            self._writer.close()
        self.connected = False
