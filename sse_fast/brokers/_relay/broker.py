"""A worker's side of the relay: ``RelayBroker``.

It connects at lifespan startup, says hello with the newest position it
applied, applies the relay's welcome and replayed log, then sends publishes to
the relay and applies what it delivers. When the relay is lost it keeps the
streams open, refuses publishes with 503 and ``Retry-After``, and reconnects
(the promises are in ``__init__.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from ..._tasks import carry_on, stop_task
from ...protocol import Reason
from ...publishing import PublishError, PublishRequest
from .. import Broker
from ..durable._reading import Loaded
from ..durable._restore import RestoreProgress, read_into
from . import wire
from .process import GATHER_TIMEOUT

__all__ = ["RECONNECT_MAX_DELAY", "RETRY_AFTER", "RelayBroker"]

log = logging.getLogger("sse_fast.relay")

#: seconds a client refused while the relay is unreachable is told to wait (``Retry-After``)
RETRY_AFTER = 1.0  # seconds, when the relay is unreachable
#: the longest wait between a worker's attempts to reach the relay (seconds)
RECONNECT_MAX_DELAY = 1.0  # seconds between a worker's attempts to reach the relay, at most


class RelayBroker(Broker):
    """A worker's connection to the relay; reconnects by itself when it is lost."""

    def __init__(
        self,
        path: str,
        connect_timeout: float = 10.0,
        keepalive: float = 2.0,
        store_dir: str = "",
    ) -> None:
        super().__init__()
        self.path = path
        #: the relay's data directory, read (never written) before joining
        self.store_dir = store_dir
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
        """Load the relay's data directory when there is one, then connect and join;
        ``ConnectionError`` when the relay cannot be reached within ``connect_timeout`` seconds."""
        if self.store_dir:
            await self._restore()
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                reader = await self._connect()
                break
            except (OSError, asyncio.IncompleteReadError):  # refused, or hung up in the hello
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot reach the relay at {self.path}") from None
                await asyncio.sleep(0.05)
        self._task = asyncio.get_running_loop().create_task(self._run(reader))

    async def _restore(self) -> None:
        """Apply the relay's data directory (``progress``), then join holding it (the relay
        replays the rest from its log): each worker of a restarted server loads it, in parallel."""
        self.progress = progress = RestoreProgress()
        loaded = await read_into(self.member, self.store_dir, progress, self._read)
        if loaded.count and loaded.sequence is not None:
            self.sequence = loaded.sequence

    def _read(self, loaded: Loaded) -> None:
        """What the data directory holds, before it is applied: its lost ranges, and
        where its history begins."""
        self.lost = loaded.lost
        if loaded.events:
            self.first_position = loaded.first_position

    async def _connect(self) -> asyncio.StreamReader:
        """Connect, say hello, apply the welcome and the replayed log."""
        reader, writer = await asyncio.open_unix_connection(self.path)
        try:
            member = self.member
            rejoining = self.sequence is not None
            last = member.last_position if rejoining else None
            writer.write(wire.Hello(self.sequence, last).pack())
            async with asyncio.timeout(self.keepalive * 2):
                welcome = await wire.receive(reader)
            if not isinstance(welcome, wire.Welcome):
                raise ConnectionError(f"the relay answered hello with {welcome.kind!r}")
            if not welcome.continued:
                if rejoining:
                    reason = (
                        Reason.RELAY_RESTARTED
                        if welcome.first_position != self.sequence
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
                self.first_position = welcome.history_from
                member.rejoined(welcome.history_from, reason)
            self.sequence = welcome.first_position
            self.worker = welcome.worker
            self.relay_pid = welcome.pid
            for _ in range(welcome.replay):
                replayed = await wire.receive(reader)
                if not isinstance(replayed, wire.Deliver):
                    raise ConnectionError(f"the relay replayed a {replayed.kind!r} message")
                self.deliver(replayed.items)
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
            # anything else the reading raises (a bug in delivering, a message the wire cannot
            # read) drops the connection and reconnects: left to end the task, this worker
            # would deliver nothing more and refuse every publish, and say nothing
            with carry_on("reading from the relay (reconnecting)", log):
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
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
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
                async with asyncio.timeout(self.keepalive * 2):
                    await self._request(wire.Ping)
            except TimeoutError:
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
                message = await wire.receive(reader)
                if isinstance(message, wire.Deliver):
                    self.deliver(message.items)
                elif isinstance(message, wire.Report):
                    self._answer_report(message)
                elif isinstance(message, wire.Ack | wire.Refused | wire.Gathered | wire.Pong):
                    self._answered(message)
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

    def _answered(self, answer: wire.Ack | wire.Refused | wire.Gathered | wire.Pong) -> None:
        """The relay's answer to a publish or another request of this worker's."""
        request = answer.request
        future = self._pending.pop(request, None) or self._asks.pop(request, None)
        if future is None or future.done():
            return
        if isinstance(answer, wire.Ack):
            future.set_result(answer.ids)
        elif isinstance(answer, wire.Gathered):
            future.set_result(answer.figures)
        elif isinstance(answer, wire.Pong):
            future.set_result(None)
        else:
            future.set_exception(
                PublishError(
                    answer.message,
                    status=400 if answer.status is None else answer.status,
                    retry_after=None if answer.status is None else RETRY_AFTER,
                    reason=answer.reason,
                )
            )

    def _answer_report(self, report: wire.Report) -> None:
        try:
            figures = self.member.report(report.query)
        except Exception:  # pragma: no cover - a bug; the gather times out without us
            log.exception("cannot report figures")
            return
        if self._writer is not None:
            self._writer.write(wire.Figures(report.gather, figures).pack())

    # ---------------------------------------------------------------- state

    @property
    def available(self) -> bool:
        """Whether this worker is connected to the relay."""
        return self.connected

    @property
    def unavailable_for(self) -> float:
        """Seconds since the relay connection was lost (0 while connected)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    @property
    def pending(self) -> int:
        """Publishes sent to the relay and not answered yet."""
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        """``/stats``' ``relay`` section: connected, the relay's pid, publishes pending, reconnects
        and history breaks."""
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

    def _request(self, message: Callable[[int], wire.Ping | wire.Gather]) -> asyncio.Future[Any]:
        """Send ``message(request)`` (a fresh request number); the future of its answer."""
        if not self.connected or self._writer is None:
            raise PublishError(
                "relay unavailable; try again shortly", status=503, retry_after=RETRY_AFTER
            )
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._asks[request_id] = future
        self._writer.write(message(request_id).pack())
        return future

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """Send ``requests`` to the relay and return the ids it acknowledges; ``PublishError``: 400
        for an event that cannot be encoded, 503 while the relay is unreachable, when its data
        directory cannot be written, or when the connection is lost before the answer."""
        if not self.connected or self._writer is None:
            raise PublishError(
                "relay unavailable; try again shortly", status=503, retry_after=RETRY_AFTER
            )
        # No pre-check here: the relay encodes the whole batch before sequencing
        # any of it and answers "error" on EncodeError, so nothing is half-published
        # and each frame is encoded once. Only what cannot even be put on the wire
        # is refused here, with the same answer one worker gives.
        request_id = next(self._ids)
        message = wire.Publish(request_id, accepted_at, requests).pack()
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._writer.write(message)
        return await future

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker's figures through the relay; this worker's alone (with
        ``"worker": None``) while the relay is away."""
        try:
            future = self._request(lambda request: wire.Gather(request, query))
            async with asyncio.timeout(GATHER_TIMEOUT * 3):
                return list(await future)
        except (TimeoutError, PublishError):
            return [{**self.member.report(query), "worker": self.worker}]

    async def close(self) -> None:
        """Stop reading from the relay and close the connection."""
        self._closing = True
        if self._task is not None:
            await stop_task(self._task)
        if self._writer is not None:
            self._writer.close()
        self.connected = False
