"""Multi-worker relay: one sequencer process, every worker sees every publish.

With ``--workers N`` the ``serve`` command starts this relay on a Unix socket
before Granian starts its workers. Each worker connects at lifespan startup.
A worker that accepts ``POST /publish`` validates the events and sends them to
the relay; the relay assigns the global sequence numbers and ids, encodes
each frame once, and broadcasts the encoded frames to all workers (the
publishing one included) in one order, then acknowledges with the ids.
Every worker thus holds identical rings, so ``Last-Event-ID`` resumes on
whichever worker a client reconnects to. No external service is involved.

Wire format (both directions): ``!II`` total length and header length, a
JSON header (orjson), then raw frame bytes for deliveries.
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

from . import EncodeError
from .hub import (
    Hub,
    PublishError,
    PublishRequest,
    Sequenced,
    initial_gseq,
    make_frame,
    sequence,
)

log = logging.getLogger("sse_fast.relay")

_PREFIX = struct.Struct("!II")
MAX_MESSAGE = 256 * 1024 * 1024


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


def pack_publish(request_id: int, requests: list[PublishRequest]) -> bytes:
    """A worker's publish message; raises ``PublishError`` (400) for events that
    cannot be encoded, with the encoder's own explanation."""
    try:
        return pack(
            {
                "t": "pub",
                "r": request_id,
                "a": time.monotonic(),
                "e": [[r.topics, _wire_data(r.data), r.event, r.id, r.retry] for r in requests],
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
    header = {"t": "d", "i": [[i.gseq, i.id, i.topics, i.accepted_at, len(i.frame)] for i in items]}
    return pack(header, b"".join(i.frame for i in items))


def unpack_delivery(header: dict[str, Any], payload: bytes) -> list[Sequenced]:
    items = []
    offset = 0
    for gseq, event_id, topics, accepted_at, size in header["i"]:
        items.append(
            Sequenced(gseq, event_id, tuple(topics), payload[offset : offset + size], accepted_at)
        )
        offset += size
    return items


class Relay:
    """The sequencer and broadcaster (runs in its own process)."""

    def __init__(self) -> None:
        self.first_gseq = initial_gseq()
        self.next_gseq = self.first_gseq
        self.workers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.workers.add(writer)
        try:
            while True:
                header, _ = await read_message(reader)
                if header["t"] == "hello":
                    writer.write(
                        pack({"t": "welcome", "first": self.first_gseq, "last": self.next_gseq - 1})
                    )
                elif header["t"] == "pub":
                    self.publish(writer, header)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.workers.discard(writer)
            writer.close()

    def publish(self, origin: asyncio.StreamWriter, header: dict[str, Any]) -> None:
        requests = [PublishRequest(tuple(t), d, e, i, r) for t, d, e, i, r in header["e"]]
        try:
            items = sequence(requests, self.next_gseq, header["a"])
        except EncodeError as exc:
            origin.write(pack({"t": "err", "r": header["r"], "m": str(exc)}))
            return
        self.next_gseq += len(items)
        message = pack_delivery(items)
        for worker in self.workers:
            worker.write(message)
        origin.write(pack({"t": "ack", "r": header["r"], "ids": [i.id for i in items]}))


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


class RelayClient:
    """A worker's connection to the relay; installs itself as the hub's sequencer."""

    def __init__(self, path: str, hub: Hub, connect_timeout: float = 10.0) -> None:
        self.path = path
        self.hub = hub
        self.connect_timeout = connect_timeout
        self.connected = False
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[list[str]]] = {}
        self._ids = itertools.count(1)

    async def connect(self) -> None:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot reach the relay at {self.path}") from None
                await asyncio.sleep(0.05)
        writer.write(pack({"t": "hello"}))
        header, _ = await read_message(reader)
        self.hub.use_remote_sequencer(self.submit, header["first"], header["last"])
        self._writer = writer
        self.connected = True
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, payload = await read_message(reader)
                kind = header["t"]
                if kind == "d":
                    self.hub.apply(unpack_delivery(header, payload))
                elif kind in ("ack", "err"):
                    future = self._pending.pop(header["r"], None)
                    if future is not None and not future.done():
                        if kind == "ack":
                            future.set_result(header["ids"])
                        else:
                            future.set_exception(PublishError(header["m"]))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.error("lost the relay connection: publishing is unavailable on this worker")
        finally:
            self.connected = False
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(PublishError("relay unavailable", status=503))
            self._pending.clear()

    async def submit(self, requests: list[PublishRequest]) -> list[str]:
        if not self.connected or self._writer is None:
            raise PublishError("relay unavailable; try again shortly", status=503)
        # No pre-check here: the relay encodes the whole batch before sequencing
        # any of it and answers "err" on EncodeError, so nothing is half-published
        # and each frame is encoded once. Only what cannot even be put on the wire
        # is refused here, with the same answer one worker gives.
        request_id = next(self._ids)
        message = pack_publish(request_id, requests)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._writer.write(message)
        return await future

    @property
    def pending(self) -> int:
        """Publishes sent to the relay and not answered yet."""
        return len(self._pending)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
        self.connected = False
