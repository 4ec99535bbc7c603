"""Three minimal SSE apps that differ only in how a publish reaches the sockets.

Used by ``benches/fanout_paths.py``. All three speak sse_fast's HTTP API, so
``sse_fast/loadgen/`` drives them unchanged:

* ``GET /events?topic=T`` streams ``text/event-stream``;
* ``POST /publish`` with JSON ``{"topic": T, "data": "<str>"}`` answers
  ``{"ids": ["<n>"]}``; the frame is ``sse_fast.encode(data)``, i.e.
  ``data: <str>\\n\\n``, encoded once per publish;
* ``GET /healthz`` answers ``ok`` (readiness probe); ``GET /stats`` answers
  JSON with the open streams, the fan-out span per publish (from the publish
  until a callback scheduled right after it runs, i.e. until every delivery
  it woke has handed its bytes to Granian; p50 / p99 / max over the server's
  life, warm-up included) and, for ``loop_app``, the detected finished-awaitable
  type and the number of slow-path writes.

Write paths (one process, one event loop; every publish builds one
``http.response.body`` message shared by all subscribers):

``loop_app``
    The publish handler itself runs one fan-out loop that calls every
    subscriber's ASGI ``send()`` in turn. Under Granian ``send()`` is eager: it
    hands the bytes over at call time and, while the connection's channel has
    room, returns an already-finished awaitable (type ``PyEmptyAwaitable``,
    learnt at run time from the ``http.response.start`` send). Such results
    are dropped without an await. Any other result (a full channel, or a
    server whose ``send`` is a plain coroutine) still holds its message: the
    subscriber then gets a drain task that awaits it and then the frames
    published meanwhile (kept in order in a per-subscriber backlog, FIFO),
    after which it rejoins the fast path.
``tasks_app``
    The common pattern: one delivery task per connection awaits a shared
    ``asyncio.Future`` that the publisher resolves, then ``await send(...)``.
    The futures form a chain (each resolves to ``(message, next_future)``), so
    a subscriber that was still busy sending never misses an event.
``queues_app``
    One ``asyncio.Queue`` per subscriber (the sse-starlette / broadcaster
    pattern): the publisher ``put_nowait``\\ s into every queue, the delivery
    task awaits ``queue.get()`` then ``send``.

Every stream waits on ``receive()`` for ``http.disconnect`` (Granian's
``send()`` does not fail once the client is gone and the app task is not
cancelled) and then unsubscribes and cancels its task. The apps are
benchmark fixtures: no heartbeats, no ids in frames, no resume, no limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from sse_fast import encode

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Message = dict[str, Any]

STREAM_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ],
}


# --------------------------------------------------------------------------- shared HTTP bits


async def answer_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None when the client went away."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _topic_of(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("topic")
    return values[0] if values else None


def _make_app(
    stream: Callable[[str, Receive, Send], Awaitable[None]],
    publish: Callable[[str, Message], None],
    stats: Callable[[], dict[str, Any]],
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app routing /events to ``stream`` and /publish to ``publish``."""
    ids = itertools.count(1)
    spans: deque[float] = deque(maxlen=100_000)

    def fanout_done(started: float) -> None:
        spans.append(time.perf_counter() - started)

    def all_stats() -> dict[str, Any]:
        ordered = sorted(spans)
        return {
            **stats(),
            "fanout_count": len(ordered),
            "fanout_p50_ms": round(ordered[len(ordered) // 2] * 1e3, 3) if ordered else None,
            "fanout_p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1e3, 3) if ordered else None,
            "fanout_max_ms": round(ordered[-1] * 1e3, 3) if ordered else None,
        }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
            return
        if kind != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/events" and method == "GET":
            topic = _topic_of(scope)
            if topic is None:
                await _respond(send, 400, b"topic required\n", b"text/plain")
                return
            await stream(topic, receive, send)
        elif path == "/publish" and method == "POST":
            body = await _read_body(receive)
            if body is None:
                return
            try:
                request = orjson.loads(body)
                topic, data = request["topic"], request["data"]
                if not isinstance(topic, str) or not isinstance(data, str):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                await _respond(send, 400, b'{"error":"bad request"}', b"application/json")
                return
            message = {"type": "http.response.body", "body": encode(data), "more_body": True}
            event_id = str(next(ids))
            started = time.perf_counter()
            publish(topic, message)
            # Runs after every delivery this publish woke up: the loop fans out
            # inline, and the tasks / queue getters woken by it are already in
            # the ready queue (Granian's finished send() does not yield).
            asyncio.get_running_loop().call_soon(fanout_done, started)
            await _respond(send, 200, orjson.dumps({"ids": [event_id]}), b"application/json")
        elif path == "/stats":
            await _respond(send, 200, orjson.dumps(all_stats()), b"application/json")
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n", b"text/plain")
        else:
            await _respond(send, 404, b"not found\n", b"text/plain")

    return app


# --------------------------------------------------------------------------- (a) loop


class _LoopSubscriber:
    __slots__ = ("backlog", "drain", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.backlog: deque[Message] = deque()  # published while a write was pending
        self.drain: asyncio.Task[None] | None = None  # set while not on the fast path


_loop_topics: dict[str, set[_LoopSubscriber]] = {}
#: The type Granian's send() returns when it has already finished (learnt at run time).
_finished_type: type | None = None
#: Counters for the benchmark report (kept cheap: only the slow path counts).
loop_stats = {"slow_writes": 0}


async def _loop_drain(sub: _LoopSubscriber, pending: Awaitable[None]) -> None:
    try:
        await pending
        while sub.backlog:
            await sub.send(sub.backlog.popleft())
    finally:
        sub.drain = None


def _loop_publish(topic: str, message: Message) -> None:
    subscribers = _loop_topics.get(topic)
    if not subscribers:
        return
    finished = _finished_type
    for sub in subscribers:  # no await in here: the set cannot change while we iterate
        if sub.drain is not None:
            sub.backlog.append(message)
            continue
        result = sub.send(message)
        if type(result) is not finished:
            loop_stats["slow_writes"] += 1
            sub.drain = asyncio.ensure_future(_loop_drain(sub, result))


async def _loop_stream(topic: str, receive: Receive, send: Send) -> None:
    global _finished_type
    result = send(STREAM_START)
    if _finished_type is None and type(result).__name__ == "PyEmptyAwaitable":
        _finished_type = type(result)
    await result
    sub = _LoopSubscriber(send)
    _loop_topics.setdefault(topic, set()).add(sub)
    try:
        await _wait_disconnect(receive)
    finally:
        subscribers = _loop_topics.get(topic)
        if subscribers is not None:
            subscribers.discard(sub)
            if not subscribers:
                del _loop_topics[topic]
        if sub.drain is not None:
            sub.drain.cancel()
        sub.backlog.clear()


def _loop_stats() -> dict[str, Any]:
    return {
        "streams": sum(len(s) for s in _loop_topics.values()),
        "draining": sum(s.drain is not None for t in _loop_topics.values() for s in t),
        "finished_type": _finished_type.__name__ if _finished_type else None,
        **loop_stats,
    }


loop_app = _make_app(_loop_stream, _loop_publish, _loop_stats)


# --------------------------------------------------------------------------- (b) tasks


_task_heads: dict[str, asyncio.Future[tuple[Message, Any]]] = {}


def _task_head(topic: str) -> asyncio.Future[tuple[Message, Any]]:
    head = _task_heads.get(topic)
    if head is None:
        head = _task_heads[topic] = asyncio.get_running_loop().create_future()
    return head


def _tasks_publish(topic: str, message: Message) -> None:
    head = _task_heads.get(topic)
    if head is None:  # nobody listening
        return
    following = asyncio.get_running_loop().create_future()
    _task_heads[topic] = following
    head.set_result((message, following))


async def _tasks_deliver(future: asyncio.Future[tuple[Message, Any]], send: Send) -> None:
    while True:
        message, future = await future
        await send(message)


async def _tasks_stream(topic: str, receive: Receive, send: Send) -> None:
    await send(STREAM_START)
    task = asyncio.ensure_future(_tasks_deliver(_task_head(topic), send))
    _tasks_open[0] += 1
    try:
        await _wait_disconnect(receive)
    finally:
        _tasks_open[0] -= 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


_tasks_open = [0]


def _tasks_stats() -> dict[str, Any]:
    return {"streams": _tasks_open[0]}


tasks_app = _make_app(_tasks_stream, _tasks_publish, _tasks_stats)


# --------------------------------------------------------------------------- (c) queues


_queue_topics: dict[str, set[asyncio.Queue[Message]]] = {}


def _queues_publish(topic: str, message: Message) -> None:
    for queue in _queue_topics.get(topic, ()):
        queue.put_nowait(message)


async def _queues_deliver(queue: asyncio.Queue[Message], send: Send) -> None:
    while True:
        message = await queue.get()
        await send(message)


async def _queues_stream(topic: str, receive: Receive, send: Send) -> None:
    await send(STREAM_START)
    queue: asyncio.Queue[Message] = asyncio.Queue()
    _queue_topics.setdefault(topic, set()).add(queue)
    task = asyncio.ensure_future(_queues_deliver(queue, send))
    try:
        await _wait_disconnect(receive)
    finally:
        queues = _queue_topics.get(topic)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del _queue_topics[topic]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _queues_stats() -> dict[str, Any]:
    queues = [q for t in _queue_topics.values() for q in t]
    return {"streams": len(queues), "queued": sum(q.qsize() for q in queues)}


queues_app = _make_app(_queues_stream, _queues_publish, _queues_stats)

APPS = {"loop": "loop_app", "tasks": "tasks_app", "queues": "queues_app"}
