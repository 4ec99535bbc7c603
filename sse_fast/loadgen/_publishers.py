"""The publishing side: one keep-alive HTTP/1.1 connection and the requests it sends
(``KeepAlivePublisher``), or a command run per event (``CommandPublisher``). Both
publish with ``await publish(topic, data)`` and count their failures the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

try:
    import httptools
except ImportError:  # pragma: no cover - a run refuses to start without it (_run.py)
    httptools = None  # type: ignore[assignment]
import orjson

from ..loadtarget import CommandPublish
from ._stats import count_into, failure_name

__all__ = [
    "CommandPublisher",
    "KeepAlivePublisher",
    "PublishRequest",
    "sse_fast_publish",
    "with_token",
]

#: ``request(topic, data)`` -> (method, path, headers, body) of one publish
PublishRequest = Callable[[str, str], tuple[str, str, dict[str, str], bytes]]


class _Response:
    """What httptools reports of one response to a publish."""

    __slots__ = ("body", "complete", "keep_alive", "parser")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        # asked here: once the message is complete the parser says False (httptools 0.9)
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


class KeepAlivePublisher:
    """Publishes over one keep-alive HTTP/1.1 connection."""

    def __init__(
        self,
        host: str,
        port: int,
        request: PublishRequest,
    ) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.errors = 0
        self.sent = 0
        self.failures: dict[str, int] = {}  # "HTTP 401: <the server's message>" -> count
        #: the last publish failed before the server could have taken it (no connection,
        #: or an answer that is not 2xx); False after one whose answer was lost
        self.refused = False

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def publish(self, topic: str, data: str) -> bool:
        """Publish ``data`` to ``topic`` on the kept-alive connection (connecting first when
        needed); True on a 2xx answer, else False, the failure counted in ``errors`` and
        ``failures`` (``refused`` says whether it was refused for sure)."""
        self.refused = False
        if self.writer is not None and self._gone():
            self.close()  # the server closed it while idle: this request was never sent
        if self.writer is None:
            try:
                await self._connect()
            except OSError as exc:
                self.errors += 1
                count_into(self.failures, failure_name(exc))
                self.refused = True
                return False
        assert self.reader is not None and self.writer is not None
        method, path, headers, body = self.request(topic, data)
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        response = _Response()
        parser = response.parser = httptools.HttpResponseParser(response)
        reader = self.reader

        async def read_response() -> None:
            while not response.complete:
                chunk = await reader.read(65536)
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", None)
                parser.feed_data(chunk)

        try:
            async with asyncio.timeout(10):
                await read_response()
            status, body = parser.get_status_code(), b"".join(response.body)
            if not response.keep_alive:
                self.close()
        except (
            TimeoutError,
            OSError,
            asyncio.IncompleteReadError,
            httptools.HttpParserError,
        ) as exc:
            self.errors += 1
            count_into(self.failures, failure_name(exc))
            self.close()
            return False
        ok = 200 <= status < 300
        self.sent += ok
        if not ok:
            self.refused = True
            self.errors += 1
            message = body[:200].decode("utf-8", "replace")
            count_into(self.failures, f"HTTP {status}: {message}" if message else f"HTTP {status}")
        return ok

    def _gone(self) -> bool:
        """Whether the kept-alive connection was closed by the server since the last
        answer (a restart, an idle timeout): writing on it would lose the answer and
        leave the event's fate unknown, though the server never read it."""
        reader, writer = self.reader, self.writer
        assert reader is not None and writer is not None
        return reader.at_eof() or reader.exception() is not None or writer.is_closing()

    def close(self) -> None:
        """Close the connection (the next ``publish`` opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class CommandPublisher:
    """Publishes by running ``command`` (a ``CommandPublish``) once per event, in the
    loop's default executor so the loop goes on meanwhile; exit status 0 is a success,
    anything else a failure counted as an HTTP one is."""

    def __init__(self, command: CommandPublish) -> None:
        self.command = command
        self.errors = 0
        self.sent = 0
        self.failures: dict[str, int] = {}  # "exit 1: <the end of its stderr>" -> count
        self.refused = False  # a command's failure says nothing of what it published

    async def publish(self, topic: str, data: str) -> bool:
        """Run the command for ``data`` and ``topic``; True when it exited with 0."""
        loop = asyncio.get_running_loop()
        ok, why = await loop.run_in_executor(None, self.command.run, topic, data)
        if ok:
            self.sent += 1
        else:
            self.errors += 1
            count_into(self.failures, why)
        return ok

    def close(self) -> None:
        """Nothing to close: each command ended with its publish."""


def with_token(request: PublishRequest, token: str) -> PublishRequest:
    """``request`` with ``Authorization: Bearer <token>`` added."""

    def authorised(topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
        method, path, headers, body = request(topic, data)
        return method, path, {**headers, "Authorization": f"Bearer {token}"}, body

    return authorised


def sse_fast_publish(topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
    """The request of one publish to sse_fast: ``POST /publish`` of ``{"topic": topic, "data":
    data}``."""
    return (
        "POST",
        "/publish",
        {"Content-Type": "application/json"},
        orjson.dumps({"topic": topic, "data": data}),
    )
