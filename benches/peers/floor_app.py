"""The floor of per-user notifications under Granian: an ASGI app that does nothing
but hand each published event's frame to its topic's streams.

``benches.notifications`` runs it as the target ``granian-floor``, beside sse_fast and
Nchan, to say how much of sse_fast's cost per event is Granian's and the kernel's
(the request, the hand-over of each frame, the loopback write) and how much is
sse_fast's own. It speaks the part of sse_fast's HTTP API the benchmark uses:

* ``GET /events?topic=T`` streams ``text/event-stream`` until the client goes;
* ``POST /publish`` with JSON ``{"topic": T, "data": "<str>"}`` or
  ``{"events": [{"topic": T, "data": "<str>"}, ...]}`` (a ``Publisher``'s batch)
  writes ``id: <n>`` / ``data: <str>`` to every stream of each event's topic, in
  order, and answers ``{"ids": ["<n>", ...]}``;
* ``GET /healthz`` answers ``ok``.

What it leaves out is what sse_fast does per event beyond that: no history (nothing
to resume from), no data directory, no limits, checks, auth, metrics or heartbeats,
ids from one counter, JSON parsed with no validation (data is one line, as the
benchmark's is), one process. A frame goes
out during the publish (Granian's ``send()`` hands the bytes over at call time;
its already-finished awaitable is dropped, as sse_fast's fan-out does); when a
stream's channel is full, that stream's frames wait in a list of its own, sent in
order by one task, so nothing is lost or reordered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from benches.fanout_apps import answer_lifespan  # (the repository is on the path)

Send = Callable[[dict[str, Any]], Awaitable[None]]

STREAM_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
}
JSON_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}


class Stream:
    """One subscriber: its ``send``, and the frames waiting behind a full channel."""

    __slots__ = ("backlog", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.backlog: deque[dict[str, Any]] | None = None

    def write(self, message: dict[str, Any], finished: type | None) -> None:
        if self.backlog is not None:  # a drain is under way: keep the order
            self.backlog.append(message)
            return
        result = self.send(message)
        if finished is None or type(result) is not finished:
            self.backlog = deque()
            task = asyncio.ensure_future(self._drain(result))
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)

    async def _drain(self, first: Awaitable[None]) -> None:
        try:
            await first
            while self.backlog:
                await self.send(self.backlog.popleft())
        finally:
            self.backlog = None


topics: dict[str, dict[int, Stream]] = {}
_tasks: set[asyncio.Future[None]] = set()
_state: dict[str, Any] = {"next": 1, "finished": None}


async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await answer_lifespan(receive, send)
        return
    if kind != "http":
        return
    path = scope["path"]
    if path == "/events":
        await _events(scope, receive, send)
    elif path == "/publish" and scope["method"] == "POST":
        await _publish(receive, send)
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _events(scope: dict[str, Any], receive: Any, send: Send) -> None:
    topic = parse_qs(scope["query_string"].decode()).get("topic", [""])[0]
    # Granian's send: an already-finished awaitable while the channel has room
    started = send(STREAM_START)
    if _state["finished"] is None and type(started).__name__ != "coroutine":
        _state["finished"] = type(started)
    await started
    await send({"type": "http.response.body", "body": b": ok\n\n", "more_body": True})
    streams = topics.setdefault(topic, {})
    stream = Stream(send)
    streams[id(stream)] = stream
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        streams.pop(id(stream), None)
        if not streams:
            topics.pop(topic, None)


async def _publish(receive: Any, send: Send) -> None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    doc = orjson.loads(b"".join(chunks))
    events = doc.get("events", [doc])
    ids = []
    finished = _state["finished"]
    for event in events:
        number = _state["next"]
        _state["next"] = number + 1
        event_id = str(number)
        ids.append(event_id)
        streams = topics.get(event["topic"])
        if not streams:
            continue
        frame = b"id: " + event_id.encode() + b"\ndata: " + event["data"].encode() + b"\n\n"
        message = {"type": "http.response.body", "body": frame, "more_body": True}
        for stream in streams.values():
            stream.write(message, finished)
    await send(JSON_START)
    await send({"type": "http.response.body", "body": orjson.dumps({"ids": ids})})
