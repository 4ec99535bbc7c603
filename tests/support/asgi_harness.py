"""An in-process ASGI "server" for streaming tests, with Granian-like eager sends,
shared by every in-process test of the hub and the app.

``eager=True`` imitates Granian 2.8: ``send`` hands the message over at call
time and returns an already-finished awaitable (named ``PyEmptyAwaitable``, the
name the hub detects) while the stream's channel has room; when it is full, the
message is held by the returned future until the client reads. ``eager=False``
imitates uvicorn: ``send`` is a coroutine that does nothing until awaited.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Generator
from typing import Any
from urllib.parse import urlencode

import sse_fast
from sse_fast.app import App
from sse_fast.hub import Hub, PublishRequest, Subscription
from sse_fast.settings import Settings

from .decoding import Decoder


class PyEmptyAwaitable:
    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover


class Stream:
    """One streaming request against an ASGI app."""

    def __init__(
        self,
        app: Any,
        path: str = "/events",
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        eager: bool = True,
        capacity: int = 4,
        method: str = "GET",
        body: bytes = b"",
    ) -> None:
        self.app = app
        self.eager = eager
        self.capacity = capacity
        self.paused = False
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.raw = bytearray()
        #: the bytes as sent (compressed when ``Content-Encoding`` says so), write by write
        self.wire: list[bytes] = []
        self.decoder: Decoder | None = None
        self.events: list[Any] = []
        self.ended = False
        self.parser = sse_fast.Parser()
        self._channel: deque[bytes] = deque()
        self._blocked: deque[tuple[asyncio.Future[None], dict[str, Any]]] = deque()
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: set when the client has read (a lazy send held by a full channel goes on)
        self._drained = asyncio.Event()
        self._inbox.put_nowait({"type": "http.request", "body": body, "more_body": False})
        self.scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": path,
            "query_string": urlencode(query or []).encode(),
            "client": ("127.0.0.1", 5555),
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        }
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Stream:
        self.task = asyncio.get_running_loop().create_task(
            self.app(self.scope, self._receive, self._send)
        )
        return self

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    def _accept(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            if "content-encoding" in self.headers:
                self.decoder = Decoder(self.headers["content-encoding"])
            return
        self._channel.append(message.get("body", b""))
        if not message.get("more_body", False):
            self.ended = True
        if not self.paused:
            self.read()

    def _send(self, message: dict[str, Any]) -> Any:
        if not self.eager:

            async def later() -> None:
                while self.paused and len(self._channel) >= self.capacity:
                    self._drained.clear()
                    await self._drained.wait()
                self._accept(message)

            return later()
        if message["type"] == "http.response.start" or len(self._channel) < self.capacity:
            self._accept(message)
            return PyEmptyAwaitable()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._blocked.append((future, message))
        return future

    def read(self) -> None:
        """The client reads everything buffered (and unblocks held writes)."""
        while self._channel or self._blocked:
            while self._channel:
                chunk = self._channel.popleft()
                self.wire.append(chunk)
                if self.decoder is not None:  # each write decodes whole as it arrives
                    chunk = self.decoder.feed(chunk)
                self.raw += chunk
                self.events += self.parser.feed(chunk)
            if self._blocked:
                future, message = self._blocked.popleft()
                if not future.cancelled():
                    self._accept(message)
                    future.set_result(None)
        self._drained.set()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.read()

    def disconnect(self) -> None:
        self._inbox.put_nowait({"type": "http.disconnect"})

    async def finished(self, timeout: float = 5.0) -> None:
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def data(self) -> list[str]:
        return [e.data for e in self.events]


async def request(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: list[tuple[str, str]] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A complete non-streaming request."""
    stream = Stream(
        app,
        path,
        query,
        {"content-type": "application/json", **(headers or {})},
        method=method,
        body=body,
        capacity=10**6,
    )
    stream.start()
    await stream.finished()
    return stream.status or 0, stream.headers, bytes(stream.raw)


async def settle(rounds: int = 20) -> None:
    """Let scheduled callbacks and tasks run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def make_app(**settings: Any) -> App:
    """An app with the limits and auth off (``test_auth.py`` and
    ``test_app_admission.py`` test those)."""
    settings.setdefault("allow_anonymous_publish", True)
    settings.setdefault("connect_rate_per_ip", 0)
    settings.setdefault("max_connections_per_ip", 0)
    return App(Settings(**settings))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def publish(app: App, topic: str | list[str], data: Any, **kw: Any) -> list[str]:
    """Publish through the in-process API (one worker)."""
    topics = (topic,) if isinstance(topic, str) else tuple(topic)
    return app.hub.publish_nowait([PublishRequest(topics, data, **kw)])


async def attach(hub: Hub, names: list[str], last_event_id: str | None = None) -> Subscription:
    """A stream attached straight to ``hub`` whose client reads everything at once
    (an eager ``send`` that drops what it is given) and never leaves."""
    loop = asyncio.get_running_loop()
    return await hub.attach(
        names, last_event_id, lambda message: PyEmptyAwaitable(), loop.create_future
    )
