"""The relay broker: several workers of one server, one sequencer process.

With ``--workers N`` the ``serve`` command starts the relay (``run_relay``) on
a Unix socket before Granian starts its workers. Each worker's hub has a
``RelayBroker`` that connects at lifespan startup. A worker that accepts
``POST /publish`` validates the events and sends them to the relay; the relay
sequences them (positions, ids, each frame encoded once) and delivers the
encoded frames to all workers (the publishing one included) in one order,
then acknowledges with the ids. Every worker thus holds identical rings, so
``Last-Event-ID`` resumes on whichever worker a client reconnects to. No
external service is involved. The promises are those of the broker contract
(``brokers/__init__.py``); a worker joining late claims history only from the
first position it is delivered.

Wire format (both directions): ``!II`` total length and header length, a JSON
header (orjson), then raw frame bytes for deliveries. Headers, by ``type``:

* ``hello`` (worker -> relay), answered by ``welcome`` with ``first_position``
  (where the relay's sequence started) and ``last_position`` (the newest
  position it gave out);
* ``publish`` (worker -> relay): ``request`` (the worker's number for it),
  ``accepted_at`` and ``events``: ``[topics, data, event, id, retry]`` each,
  data pre-serialised JSON (or text);
* ``deliver`` (relay -> every worker): ``events``: ``[position, id, topics,
  accepted_at, size]`` each, the frames concatenated after the header;
* ``ack`` (relay -> publishing worker): ``request``, ``ids``; or ``error``:
  ``request``, ``message`` (an event could not be encoded: nothing published).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
import time
from typing import Any

import orjson

from .._core import EncodeError
from ..publishing import PublishError, PublishRequest
from . import Broker
from .sequencing import Sequenced, first_position, make_frame, sequence

log = logging.getLogger("sse_fast.relay")

_PREFIX = struct.Struct("!II")
MAX_MESSAGE = 256 * 1024 * 1024
RETRY_AFTER = 1.0  # seconds, when the relay is unreachable


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


class Relay:
    """The sequencer and broadcaster (runs in its own process)."""

    def __init__(self) -> None:
        self.first_position = first_position()
        self.next_position = self.first_position
        self.workers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.workers.add(writer)
        try:
            while True:
                header, _ = await read_message(reader)
                if header["type"] == "hello":
                    writer.write(
                        pack(
                            {
                                "type": "welcome",
                                "first_position": self.first_position,
                                "last_position": self.next_position - 1,
                            }
                        )
                    )
                elif header["type"] == "publish":
                    self.publish(writer, header)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.workers.discard(writer)
            writer.close()

    def publish(self, origin: asyncio.StreamWriter, header: dict[str, Any]) -> None:
        requests = [PublishRequest(tuple(t), d, e, i, r) for t, d, e, i, r in header["events"]]
        try:
            items = sequence(requests, self.next_position, header["accepted_at"])
        except EncodeError as exc:
            origin.write(pack({"type": "error", "request": header["request"], "message": str(exc)}))
            return
        self.next_position += len(items)
        message = pack_delivery(items)
        for worker in self.workers:
            worker.write(message)
        origin.write(
            pack({"type": "ack", "request": header["request"], "ids": [i.id for i in items]})
        )


async def serve_relay(path: str, ready: Any = None) -> None:
    relay = Relay()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = await asyncio.start_unix_server(relay.handle, path=path)
    os.chmod(path, 0o600)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def run_relay(path: str, ready: Any = None) -> None:
    """Process entry point."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us after the workers
    try:
        import uvloop

        uvloop.run(serve_relay(path, ready))
    except ImportError:  # pragma: no cover
        asyncio.run(serve_relay(path, ready))


class RelayBroker(Broker):
    """A worker's connection to the relay."""

    def __init__(self, path: str, connect_timeout: float = 10.0) -> None:
        super().__init__()
        self.path = path
        self.connect_timeout = connect_timeout
        # Known once connected; until then nothing is delivered and nothing claimed.
        self.first_position = 0
        self.connected = False
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[list[str]]] = {}
        self._ids = itertools.count(1)

    async def start(self) -> None:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot reach the relay at {self.path}") from None
                await asyncio.sleep(0.05)
        writer.write(pack({"type": "hello"}))
        header, _ = await read_message(reader)
        # This worker is delivered what the relay sequences from now on: it may
        # claim no older history (the broker contract's "History claims").
        self.first_position = header["last_position"] + 1
        self._writer = writer
        self.connected = True
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, payload = await read_message(reader)
                kind = header["type"]
                if kind == "deliver":
                    self.deliver(unpack_delivery(header, payload))
                elif kind in ("ack", "error"):
                    future = self._pending.pop(header["request"], None)
                    if future is not None and not future.done():
                        if kind == "ack":
                            future.set_result(header["ids"])
                        else:
                            future.set_exception(PublishError(header["message"]))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.error("lost the relay connection: publishing is unavailable on this worker")
        finally:
            self.connected = False
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        PublishError("relay unavailable", status=503, retry_after=RETRY_AFTER)
                    )
            self._pending.clear()

    @property
    def available(self) -> bool:
        return self.connected

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

    @property
    def pending(self) -> int:
        """Publishes sent to the relay and not answered yet."""
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        return {"relay": {"connected": self.connected, "pending": self.pending}}

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
        self.connected = False
