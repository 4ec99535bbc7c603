"""A chat on the Starlette adapter (``sse_fast.starlette.EventSourceResponse``).

* ``POST /chat/send`` (JSON ``{"name": ..., "text": ...}``) stores a message
  with the next id and hands it to every open stream. Bad input gets a 400
  saying what was wrong (a body over ``MAX_BODY`` bytes a 413), and nothing is
  stored.
* Each client (by address) may send ``SEND_BURST`` messages at once, then
  ``SEND_PER_SECOND``: past that, a 429 with ``Retry-After`` and the limit in
  its ``error``. Only messages stored count: a refused one gives its turn back.
  The name does not count: a client chooses it freely, so keying by it would
  let one client mint as many allowances as it likes.
* ``GET /chat/stream?name=...`` sends the last 10 messages (or, from a client
  that reconnects with ``Last-Event-ID``, every message after that id), then
  new messages as ``message`` events with their ids, and ``join``/``leave``
  events (no id: they are not history) with who is online.
* The room keeps the last ``KEPT`` messages, in memory and in a file (JSON
  lines; flushed, not fsynced: a server restart loses none, a machine crash
  may lose the last ones), read back at start: a client that reconnects after
  the server restarted resumes from its ``Last-Event-ID`` and gets each
  message once. The file is appended to and, when it reaches twice ``KEPT``
  lines, rewritten as the last ``KEPT`` (a synced temporary file renamed over
  it: a crash leaves the old file or the new one, and the ids, which continue
  from the file's last, are never reused). An id older than those kept is
  answered as an unknown one: the last 10, and a comment saying so.

A stream whose queue fills (a client that stopped reading) is ended with its
queue emptied, so the last message it got is the last it was sent: its
browser reconnects with ``Last-Event-ID`` and loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sse_fast.starlette import EventSourceResponse, last_event_id

from ._ids import message_id

HISTORY = 10  # messages a new client gets
KEPT = 1000  # messages kept, in memory and in the file, for resumes
MAX_NAME, MAX_TEXT = 32, 500
MAX_BODY = 8192  # bytes of a send: the longest message with every character escaped
QUEUE = 256  # items a stream may fall behind before it is ended
RETRY_MS = 1000
# Sends per client: a few lines pasted in a row go through at once, then one a
# second, faster than anyone types but too slow for a script to flood the room.
SEND_BURST = 20
SEND_PER_SECOND = 1.0
SENDERS = 10_000  # clients the limit remembers at most (idle ones go first)


class ChatError(ValueError):
    """A message the room refuses (the response's ``error``, 400 unless said)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


class SendLimit:
    """A token bucket per client: ``burst`` sends at once, then ``per_second``.

    Buckets are kept in order of last use. One idle long enough to have filled
    again is the same as a new one and is forgotten, and at most ``most`` are
    kept (the least recently used goes first): the limit's memory is bounded
    too. ``clock`` gives seconds (``time.monotonic``; tests pass their own)."""

    def __init__(
        self,
        burst: int = SEND_BURST,
        per_second: float = SEND_PER_SECOND,
        most: int = SENDERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.per_second, self.most, self.clock = burst, per_second, most, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, at)

    def take(self, client: str) -> float:
        """Spend one of ``client``'s sends: 0 if it may send now, else the seconds
        until it may (and nothing is spent)."""
        now = self.clock()
        refilled = self.burst / self.per_second  # seconds an empty bucket takes to fill
        while self.buckets and now - next(iter(self.buckets.values()))[1] >= refilled:
            self.buckets.popitem(last=False)
        tokens, at = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_second)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_second
        self.buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        if len(self.buckets) > self.most:
            self.buckets.popitem(last=False)
        return wait

    def give_back(self, client: str) -> None:
        """Return the send ``take`` spent: the message was refused."""
        if client in self.buckets:
            tokens, at = self.buckets[client]
            self.buckets[client] = (min(self.burst, tokens + 1), at)

    def refusal(self, seconds: int) -> str:
        return (
            f"too many messages: at most {self.burst} at once, then {self.per_second:g} a second"
            f" from each client; send again in {seconds} s"
        )


class ChatRoom:
    """The messages (the last ``kept``, also in the file at ``path``), the open
    streams, who is online, and ``limit``, the senders' rate limit."""

    def __init__(
        self, path: Path | None = None, kept: int = KEPT, limit: SendLimit | None = None
    ) -> None:
        if kept < 1:
            raise ValueError(f"kept: at least 1 message, got {kept}")
        self.path, self.kept = path, kept
        self.limit = limit or SendLimit()
        self.messages: deque[dict[str, Any]] = deque(maxlen=kept)
        self.listeners: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.online: Counter[str] = Counter()
        self.lines = 0  # in the file; rewritten as the last `kept` when it reaches twice that
        if path is not None and path.exists():
            torn = False
            with path.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        continue
                    if not line.endswith("\n"):  # the last, cut short by a crash: not kept
                        torn = True
                        break
                    self.messages.append(json.loads(line))
                    self.lines += 1
            # as a file from before the bound (or a larger `kept`), or one with a torn end
            if torn or self.lines >= 2 * kept:
                self._compact(list(self.messages))

    @property
    def last_id(self) -> int:
        return self.messages[-1]["id"] if self.messages else 0

    def post(self, name: object, text: object) -> dict[str, Any]:
        name, text = _checked("name", name, MAX_NAME), _checked("text", text, MAX_TEXT)
        message = {"id": self.last_id + 1, "name": name, "text": text, "at": time.time()}
        if self.path is not None:  # stored first: a message that failed to store is not sent
            if self.lines + 1 >= 2 * self.kept:
                self._compact([*self.messages, message][-self.kept :])
            else:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(message) + "\n")
                self.lines += 1
        self.messages.append(message)
        self._broadcast({"event": "message", "id": str(message["id"]), "data": json.dumps(message)})
        return message

    def _compact(self, messages: list[dict[str, Any]]) -> None:
        """The file becomes ``messages``: written beside it, synced, renamed over it."""
        assert self.path is not None
        written = self.path.with_name(self.path.name + ".tmp")
        with written.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(message) + "\n" for message in messages)
            f.flush()
            os.fsync(f.fileno())
        os.replace(written, self.path)
        self.lines = len(messages)

    def resumes(self, last: str | None) -> int | None:
        """``last`` (a ``Last-Event-ID``) as the id a stream resumes after, or None
        when it is not an id of the room's, or older than the messages kept."""
        after = message_id(last)
        first = self.messages[0]["id"] if self.messages else self.last_id + 1
        return after if after is not None and first - 1 <= after <= self.last_id else None

    def since(self, last: str | None) -> list[dict[str, Any]]:
        """The backlog of a stream: after ``last`` (a message id), or the last
        ``HISTORY`` messages when there is none or it is not one the room keeps."""
        after = self.resumes(last)
        if after is None:
            return list(self.messages)[-HISTORY:]
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

    async def stream(self, name: str, last: str | None) -> AsyncGenerator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE)
        self.listeners.add(queue)  # before the backlog is read: nothing falls between
        backlog = self.since(last)
        sent = backlog[-1]["id"] if backlog else self.last_id
        note = f"{len(backlog)} earlier messages"
        if last is not None and self.resumes(last) is None:
            note += (
                f" (Last-Event-ID is not one of the {self.kept} kept: the latest; some are missed)"
            )
        joined = False
        try:
            yield {"retry": RETRY_MS, "comment": note}
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


async def _fields(request: Request) -> tuple[object, object]:
    """The name and text of a send, its body read up to ``MAX_BODY`` bytes."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ChatError(f"the body is over {MAX_BODY} bytes: send one short message", 413)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ChatError('the body is not JSON: {"name": ..., "text": ...}') from None
    if not isinstance(body, dict):
        raise ChatError('send a JSON object: {"name": ..., "text": ...}')
    return body.get("name"), body.get("text")


async def send(request: Request) -> Response:
    room: ChatRoom = request.app.state.chat
    client = request.client.host if request.client else ""
    wait = room.limit.take(client)
    if wait:
        seconds = max(1, math.ceil(wait))
        headers = {"Retry-After": str(seconds)}
        return JSONResponse({"error": room.limit.refusal(seconds)}, 429, headers=headers)
    try:
        message = room.post(*await _fields(request))
    except ChatError as exc:
        room.limit.give_back(client)
        return JSONResponse({"error": str(exc)}, exc.status)
    return JSONResponse({"id": message["id"]})


async def stream(request: Request) -> Response:
    room: ChatRoom = request.app.state.chat
    try:
        name = _checked("name", request.query_params.get("name"), MAX_NAME)
    except ChatError as exc:
        return JSONResponse({"error": f"{exc} (/chat/stream?name=...)"}, 400)
    return EventSourceResponse(room.stream(name, last_event_id(request)), ping=15, send_timeout=10)
