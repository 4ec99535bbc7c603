"""A chat on the Starlette adapter (``sse_fast.starlette.EventSourceResponse``).

* ``POST /chat/send`` (JSON ``{"name": ..., "text": ...}``) stores a message
  with the next id and hands it to every open stream. Bad input gets a 400
  saying what was wrong, and nothing is stored.
* ``GET /chat/stream?name=...`` sends the last 10 messages (or, from a client
  that reconnects with ``Last-Event-ID``, every message after that id), then
  new messages as ``message`` events with their ids, and ``join``/``leave``
  events (no id: they are not history) with who is online.
* Messages are appended to a file (JSON lines; flushed, not fsynced: a
  server restart loses none, a machine crash may lose the last ones) and read
  back at start: a client that reconnects after the server restarted resumes
  from its ``Last-Event-ID`` and gets each message once, from the file when
  its id is older than the last ``KEPT`` messages held in memory.

A stream whose queue fills (a client that stopped reading) is ended with its
queue emptied, so the last message it got is the last it was sent: its
browser reconnects with ``Last-Event-ID`` and loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sse_fast.starlette import EventSourceResponse, last_event_id

from ._ids import message_id

HISTORY = 10  # messages a new client gets
KEPT = 1000  # messages kept in memory for resumes
MAX_NAME, MAX_TEXT = 32, 500
QUEUE = 256  # items a stream may fall behind before it is ended
RETRY_MS = 1000


class ChatError(ValueError):
    """A message the room refuses (the 400's text)."""


class ChatRoom:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.messages: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self.listeners: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.online: Counter[str] = Counter()
        if path is not None and path.exists():
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        self.messages.append(json.loads(line))

    @property
    def last_id(self) -> int:
        return self.messages[-1]["id"] if self.messages else 0

    def post(self, name: object, text: object) -> dict[str, Any]:
        name, text = _checked("name", name, MAX_NAME), _checked("text", text, MAX_TEXT)
        message = {"id": self.last_id + 1, "name": name, "text": text, "at": time.time()}
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(message) + "\n")
        self.messages.append(message)
        self._broadcast({"event": "message", "id": str(message["id"]), "data": json.dumps(message)})
        return message

    def since(self, last: str | None) -> list[dict[str, Any]]:
        """The backlog of a stream: after ``last`` (a message id), or the last
        ``HISTORY`` messages when there is none or it is not one of ours."""
        after = message_id(last)
        if after is None or after > self.last_id:
            return list(self.messages)[-HISTORY:]
        if self.messages and after < self.messages[0]["id"] - 1 and self.path is not None:
            with self.path.open(encoding="utf-8") as f:  # older than memory holds
                return [m for line in f if line.strip() and (m := json.loads(line))["id"] > after]
        return [m for m in self.messages if m["id"] > after]

    def _presence(self, kind: str, name: str) -> None:
        online = sorted(self.online)
        self._broadcast({"event": kind, "data": json.dumps({"name": name, "online": online})})

    def _broadcast(self, item: dict[str, Any]) -> None:
        for queue in list(self.listeners):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:  # it stopped reading: end it (it resumes by id)
                self.listeners.discard(queue)
                while not queue.empty():  # nothing after a gap: its last id stays true
                    queue.get_nowait()
                queue.put_nowait(None)

    async def stream(self, name: str, last: str | None) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE)
        self.listeners.add(queue)  # before the backlog is read: nothing falls between
        backlog = self.since(last)
        sent = backlog[-1]["id"] if backlog else self.last_id
        joined = False
        try:
            yield {"retry": RETRY_MS, "comment": f"{len(backlog)} earlier messages"}
            for message in backlog:
                yield {"event": "message", "id": str(message["id"]), "data": json.dumps(message)}
            self.online[name] += 1
            joined = True
            self._presence("join", name)
            while (item := await queue.get()) is not None:
                if item.get("event") == "message" and int(item["id"]) <= sent:
                    continue  # already sent with the backlog
                yield item
        finally:
            self.listeners.discard(queue)
            if joined:
                self.online[name] -= 1
                if self.online[name] <= 0:
                    del self.online[name]
                self._presence("leave", name)


def _checked(field: str, value: object, longest: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ChatError(f"{field}: give a non-empty string")
    value = value.strip()
    if len(value) > longest:
        raise ChatError(f"{field}: at most {longest} characters, got {len(value)}")
    return value


async def send(request: Request) -> Response:
    room: ChatRoom = request.app.state.chat
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ChatError('send a JSON object: {"name": ..., "text": ...}')
        message = room.post(body.get("name"), body.get("text"))
    except json.JSONDecodeError:
        return JSONResponse({"error": 'the body is not JSON: {"name": ..., "text": ...}'}, 400)
    except ChatError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"id": message["id"]})


async def stream(request: Request) -> Response:
    room: ChatRoom = request.app.state.chat
    try:
        name = _checked("name", request.query_params.get("name"), MAX_NAME)
    except ChatError as exc:
        return JSONResponse({"error": f"{exc} (/chat/stream?name=...)"}, 400)
    return EventSourceResponse(room.stream(name, last_event_id(request)), ping=15, send_timeout=10)
