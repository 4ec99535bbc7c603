"""The ASGI application: subscribe, publish, health, metrics, stats, drain.

Usable under any ASGI server; ``sse-fast serve`` runs it under Granian with
uvloop, where ``send`` is eager and the hub's fan-out needs no task per
delivery (see ``hub.py``).

HTTP API
--------
``GET /events?topic=a&topic=b[&lastEventId=...]``
    An SSE stream of the named topics. ``Last-Event-ID`` (header, or the
    ``lastEventId`` query parameter) resumes; the ``SSE-Fast-Resume`` response
    header says ``none``, ``resumed``, ``unknown`` or ``evicted``.
``POST /publish``
    JSON ``{"topic": "a" | "topics": [...], "data": ..., "event": ...,
    "id": ..., "retry": ...}`` or ``{"events": [...]}``; answers
    ``{"ids": [...]}``. Invalid requests get 4xx with ``{"error": ...}`` and
    nothing is published.
``GET /healthz``, ``GET /readyz``
    Liveness and readiness, open to everyone (load balancers need them).
``GET /metrics``, ``GET /stats[?connections=1][&offset=N][&limit=M]``
    Operations endpoints (they name clients and topics): from ``ops_networks``
    (loopback by default) or with ``Authorization: Bearer <ops_token>``.
    ``/stats`` lists topics (and connections) a page at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import orjson

from . import metrics as metrics_module
from .abort import connection_key
from .auth import Authenticator, AuthError, OperationsAccess, TokenBucket, split_list
from .hub import Hub, PublishError, PublishRequest, Subscriber, check_topic
from .settings import Settings

log = logging.getLogger("sse_fast")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
PUBLISH_FIELDS = frozenset({"topic", "topics", "data", "event", "id", "retry"})
RESERVED_EVENT_PREFIX = "sse-fast-"


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        reason: str = "bad_request",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
        self.reason = reason


async def send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_text(
    send: Send, status: int, text: str, content_type: bytes = b"text/plain"
) -> None:
    payload = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _header_bytes(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def header(scope: Scope, name: bytes) -> str | None:
    """A request header as text, byte for byte (Latin-1): for ASCII headers."""
    value = _header_bytes(scope, name)
    return None if value is None else value.decode("latin-1")


def header_utf8(scope: Scope, name: bytes) -> str | None:
    """A request header sent as UTF-8 (``Last-Event-ID``: browsers, curl, requests,
    httpx and aiohttp all send the id's UTF-8 bytes). Bytes that are not UTF-8 come
    back as lone surrogates, which no published id can contain (the encoder
    refuses them): such an id resolves to ``unknown``, never to an error."""
    value = _header_bytes(scope, name)
    return None if value is None else value.decode("utf-8", "surrogateescape")


def parse_event(raw: Any, settings: Settings, where: str) -> PublishRequest:
    """Validate one event object of a publish body."""
    if not isinstance(raw, dict):
        raise PublishError(f"{where} must be a JSON object")
    unknown = set(raw) - PUBLISH_FIELDS
    if unknown:
        raise PublishError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(PUBLISH_FIELDS))}"
        )
    if "topic" in raw and "topics" in raw:
        raise PublishError(f"{where}: give either topic or topics, not both")
    if "topic" in raw:
        topics = [raw["topic"]]
    elif "topics" in raw:
        topics = raw["topics"]
        if not isinstance(topics, list) or not topics:
            raise PublishError(f"{where}: topics must be a non-empty list of names")
    else:
        raise PublishError(f"{where}: topic (or topics) is required")
    names = tuple(dict.fromkeys(check_topic(t, settings) for t in topics))
    if len(names) > settings.max_topics_per_connection:
        raise PublishError(
            f"{where}: {len(names)} topics; at most {settings.max_topics_per_connection} per event"
        )
    if "data" not in raw or raw["data"] is None:
        raise PublishError(
            f"{where}: data is required (any JSON value but null; "
            "strings are sent as text, other values as JSON)"
        )
    event = raw.get("event")
    if event is not None:
        if not isinstance(event, str) or not event or "\r" in event or "\n" in event:
            raise PublishError(f"{where}: event must be a non-empty one-line string")
        if event.startswith(RESERVED_EVENT_PREFIX):
            raise PublishError(
                f"{where}: event names starting with {RESERVED_EVENT_PREFIX!r} "
                "are reserved for the server"
            )
    event_id = raw.get("id")
    if event_id is not None:
        if not isinstance(event_id, str) or not event_id:
            raise PublishError(
                f"{where}: id must be a non-empty string (omit it to let the server assign one)"
            )
        if any(c in event_id for c in "\r\n\0"):
            raise PublishError(f"{where}: id must not contain CR, LF or NUL")
        if len(event_id) > settings.max_last_event_id_length:
            raise PublishError(
                f"{where}: id is longer than {settings.max_last_event_id_length} characters"
            )
    retry = raw.get("retry")
    if retry is not None and (not isinstance(retry, int) or isinstance(retry, bool) or retry < 0):
        raise PublishError(f"{where}: retry must be a non-negative integer (milliseconds)")
    return PublishRequest(names, raw["data"], event, event_id, retry)


def parse_publish_body(body: bytes, settings: Settings) -> list[PublishRequest]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PublishError(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PublishError('body must be a JSON object: one event, or {"events": [...]}')
    if "events" in document:
        if set(document) != {"events"}:
            raise PublishError("a batch body has only the field events")
        events = document["events"]
        if not isinstance(events, list) or not events:
            raise PublishError("events must be a non-empty list")
        if len(events) > settings.max_events_per_batch:
            raise PublishError(
                f"batch of {len(events)} events; the limit is {settings.max_events_per_batch}",
                status=413,
            )
        return [parse_event(raw, settings, f"events[{i}]") for i, raw in enumerate(events)]
    return [parse_event(document, settings, "body")]


class _DisconnectWatch:
    """Calls ``hub.disconnected`` when ``receive()`` reports ``http.disconnect``."""

    __slots__ = ("hub", "receive", "subscriber")

    def __init__(self, hub: Hub, subscriber: Subscriber, receive: Receive) -> None:
        self.hub = hub
        self.subscriber = subscriber
        self.receive = receive

    def arm(self) -> None:
        asyncio.ensure_future(self.receive()).add_done_callback(self.on_message)

    def on_message(self, waiter: asyncio.Future[Message]) -> None:
        if (
            waiter.cancelled()
            or waiter.exception() is not None
            or waiter.result().get("type") == "http.disconnect"
        ):
            self.hub.disconnected(self.subscriber)
        elif not self.subscriber.closed.done():
            self.arm()


class App:
    """The sse_fast ASGI application. ``app.hub`` is the in-process publish API."""

    def __init__(self, settings: Settings | None = None, hub: Hub | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.hub = hub or Hub(self.settings)
        self.ready = True
        self._periodic: asyncio.Task[None] | None = None
        self._relay: Any = None
        self._stopping = False
        self._stop_task: asyncio.Task[None] | None = None
        self.auth = Authenticator(self.settings)
        self.operations = OperationsAccess(self.settings)
        self.cors_origins = frozenset(split_list(self.settings.cors_origins))
        self.trusted_proxies = frozenset(split_list(self.settings.trusted_proxies))
        self.publish_limiter = TokenBucket(
            self.settings.publish_rate, self.settings.publish_rate * 2
        )
        self.connect_limiter = TokenBucket(
            self.settings.connect_rate_per_ip, self.settings.connect_rate_per_ip * 2
        )
        self.connections_by_ip: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"] == "/events" and scope["method"] == "GET":
                # the one long-lived handler: kept one coroutine frame deep (memory per stream)
                try:
                    await self.subscribe(scope, receive, send)
                except HTTPError as error:
                    await self._refuse(scope, send, error)
                return
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    # ---------------------------------------------------------------- lifespan

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._periodic = loop.create_task(self.hub.run_periodic())
        if self.settings.relay_socket:
            from .relay import RelayClient

            self._relay = RelayClient(self.settings.relay_socket, self.hub)
            await self._relay.connect()
        if self.settings.install_signal_handlers:
            loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)

    async def shutdown(self) -> None:
        if not self.hub.draining:
            await self.hub.drain()
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        if self._relay is not None:
            await self._relay.close()
        log.info("lifespan shutdown complete")

    def _on_sigterm(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("SIGTERM: draining %d stream(s)", len(self.hub.subscribers))
        self._stop_task = asyncio.get_running_loop().create_task(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        self.ready = False
        await self.hub.drain()
        # Granian's own handler still owns SIGINT: it stops the worker, which
        # now has no open stream to wait for, and runs lifespan shutdown.
        os.kill(os.getpid(), signal.SIGINT)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---------------------------------------------------------------- routing

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        method = scope["method"]
        try:
            if method == "OPTIONS" and path in ("/events", "/publish"):
                await self.preflight(scope, send)
            elif path == "/events":  # GET is served by __call__: only other methods get here
                self._allow(method, ("GET",))
            elif path == "/publish":
                self._allow(method, ("POST",))
                await self.publish(scope, receive, send)
            elif path == "/healthz":
                self._allow(method, ("GET",))
                await send_json(send, 200, {"status": "ok"})
            elif path == "/readyz":
                self._allow(method, ("GET",))
                ready = (
                    self.ready
                    and not self.hub.draining
                    and (self._relay is None or self._relay.connected)
                )
                await send_json(
                    send, 200 if ready else 503, {"status": "ready" if ready else "not ready"}
                )
            elif path == "/metrics":
                self._allow(method, ("GET",))
                self._check_operations(scope, path)
                await send_text(
                    send, 200, self.render_metrics(), b"text/plain; version=0.0.4; charset=utf-8"
                )
            elif path == "/stats":
                self._allow(method, ("GET",))
                self._check_operations(scope, path)
                listing, offset, limit = _stats_query(scope)
                stats = self.hub.stats(with_connections=listing, offset=offset, limit=limit)
                stats["worker_pid"] = os.getpid()
                if self._relay is not None:
                    stats["relay"] = {
                        "connected": self._relay.connected,
                        "pending": self._relay.pending,
                    }
                await send_json(send, 200, stats)
            else:
                raise HTTPError(
                    404,
                    f"no such endpoint {path!r}; see /events, /publish, "
                    "/healthz, /readyz, /metrics, /stats",
                    reason="not_found",
                )
        except HTTPError as error:
            await self._refuse(scope, send, error)

    def _check_operations(self, scope: Scope, path: str) -> None:
        try:
            self.operations.check(self.client_ip(scope), header(scope, b"authorization"), path)
        except AuthError as exc:
            raise HTTPError(
                exc.status, exc.message, _www_authenticate(exc), reason=exc.reason
            ) from None

    async def _refuse(self, scope: Scope, send: Send, error: HTTPError) -> None:
        self.hub.metrics.refuse(error.reason)
        await send_json(
            send,
            error.status,
            {"error": error.message},
            [*error.headers, *self.cors_headers(scope)],
        )

    # ---------------------------------------------------------------- CORS, clients

    def cors_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        origin = header(scope, b"origin")
        if origin is None or origin not in self.cors_origins:
            return []
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
            (b"access-control-expose-headers", b"SSE-Fast-Resume, Retry-After"),
        ]

    async def preflight(self, scope: Scope, send: Send) -> None:
        origin = header(scope, b"origin")
        if origin is None or origin not in self.cors_origins:
            raise HTTPError(
                403, f"origin {origin!r} is not allowed (cors_origins)", reason="cors_origin"
            )
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *self.cors_headers(scope),
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (
                        b"access-control-allow-headers",
                        b"Authorization, Content-Type, Last-Event-ID",
                    ),
                    (b"access-control-max-age", b"600"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    def client_ip(self, scope: Scope) -> str:
        """The peer address, or, behind a trusted proxy, the nearest untrusted
        address in X-Forwarded-For."""
        client = scope.get("client")
        peer = str(client[0]) if client else "?"
        if peer not in self.trusted_proxies:
            return peer
        forwarded = header(scope, b"x-forwarded-for")
        if not forwarded:
            return peer
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if hop not in self.trusted_proxies:
                return hop
        return peer

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            raise HTTPError(
                405,
                f"method {method} not allowed; use {', '.join(allowed)}",
                [(b"allow", ", ".join(allowed).encode())],
                reason="method",
            )

    def render_metrics(self) -> str:
        busiest = sorted(
            ((name, len(t.subscribers)) for name, t in self.hub.topics.items() if t.subscribers),
            key=lambda item: -item[1],
        )[:100]
        return metrics_module.render(
            self.hub.metrics,
            connections_open=len(self.hub.subscribers),
            topics=len(self.hub.topics),
            subscribers_by_topic=busiest,
        )

    # ---------------------------------------------------------------- subscribe

    def _subscription(self, scope: Scope) -> tuple[list[str], str | None, str | None]:
        """Topics, Last-Event-ID and query token of a subscription (400 on bad input)."""
        settings = self.settings
        try:
            query = parse_qs(
                scope.get("query_string", b"").decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=settings.max_topics_per_connection + 8,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPError(
                400, f"query string is malformed or has too many fields ({exc})", reason="bad_query"
            ) from None
        topics = query.get("topic", [])
        if not topics:
            raise HTTPError(
                400, "name at least one topic: /events?topic=NAME[&topic=OTHER]", reason="bad_topic"
            )
        names = list(dict.fromkeys(topics))
        if len(names) > settings.max_topics_per_connection:
            raise HTTPError(
                400,
                f"{len(names)} topics; at most {settings.max_topics_per_connection} per connection",
                reason="too_many_topics",
            )
        try:
            for name in names:
                check_topic(name, settings)
        except PublishError as exc:
            raise HTTPError(400, str(exc), reason="bad_topic") from None
        last_event_id = header_utf8(scope, b"last-event-id")
        if last_event_id is None:
            last_event_id = query.get("lastEventId", [None])[-1]
        if last_event_id is not None:
            if len(last_event_id) > settings.max_last_event_id_length:
                raise HTTPError(
                    400,
                    f"Last-Event-ID is longer than {settings.max_last_event_id_length} characters",
                    reason="bad_last_event_id",
                )
            if any(c in last_event_id for c in "\r\n\0"):
                raise HTTPError(
                    400, "Last-Event-ID must not contain CR, LF or NUL", reason="bad_last_event_id"
                )
        return names, last_event_id, query.get("token", [None])[-1]

    async def subscribe(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hub.draining:
            raise HTTPError(
                503,
                "server is draining; reconnect to another instance",
                [(b"retry-after", b"1")],
                reason="draining",
            )
        names, last_event_id, query_token = self._subscription(scope)
        settings = self.settings
        ip = self.client_ip(scope)
        limit = settings.max_connections
        if limit and len(self.hub.subscribers) >= limit:
            raise HTTPError(
                503,
                f"connection limit reached ({limit} streams on this worker); retry later",
                [(b"retry-after", b"5")],
                reason="max_connections",
            )
        per_ip = settings.max_connections_per_ip
        if per_ip and self.connections_by_ip.get(ip, 0) >= per_ip:
            raise HTTPError(
                429,
                f"too many streams from {ip} (max_connections_per_ip {per_ip})",
                [(b"retry-after", b"5")],
                reason="max_connections_per_ip",
            )
        wait = self.connect_limiter.take(ip)
        if wait:
            raise HTTPError(
                429,
                f"too many connection attempts from {ip}; slow down",
                [(b"retry-after", str(max(1, round(wait))).encode())],
                reason="connect_rate",
            )
        try:
            credential = self.auth.subscriber(
                header(scope, b"authorization"), header(scope, b"cookie"), query_token, names
            )
        except AuthError as exc:
            raise HTTPError(
                exc.status, exc.message, _www_authenticate(exc), reason=exc.reason
            ) from None
        client = scope.get("client")
        client_text = f"{client[0]}:{client[1]}" if client else "?"
        hub = self.hub
        subscriber, status, first = hub.open(
            send, names, client_text, last_event_id, connection_key(scope)
        )
        self.connections_by_ip[ip] = self.connections_by_ip.get(ip, 0) + 1
        expiry = None
        try:
            if credential is not None and credential.expires_at is not None:
                expiry = asyncio.get_running_loop().call_later(
                    max(0.0, credential.expires_at - time.time()), hub.expire, subscriber
                )
            headers = [
                *SSE_HEADERS,
                (b"sse-fast-resume", status.encode()),
                *self.cors_headers(scope),
            ]
            result = send({"type": "http.response.start", "status": 200, "headers": headers})
            hub.learn_send(result)
            if not hub.is_done(result):
                await result  # not eager: publishes meanwhile are caught up from the ring
            hub.start(subscriber, first)
            # Wait for the end: the client's http.disconnect, or the server closing
            # the stream (lag, drain). Each receive() is watched with a callback, so
            # a stream costs no task of its own.
            _DisconnectWatch(hub, subscriber, receive).arm()
            await subscriber.closed
        finally:
            hub.disconnected(subscriber)
            if expiry is not None:
                expiry.cancel()
            remaining = self.connections_by_ip.get(ip, 1) - 1
            if remaining:
                self.connections_by_ip[ip] = remaining
            else:
                self.connections_by_ip.pop(ip, None)

    # ---------------------------------------------------------------- publish

    async def read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPError(400, "Content-Length is not a number", reason="bad_body")
            if int(declared) > limit:
                raise HTTPError(
                    413,
                    f"body of {declared} bytes exceeds the limit of {limit} bytes (max_body_bytes)",
                    reason="body_too_large",
                )
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(
                    400, "client disconnected before sending the body", reason="bad_body"
                )
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(
                    413,
                    f"body exceeds the limit of {limit} bytes (max_body_bytes)",
                    reason="body_too_large",
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def publish(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = header(scope, b"content-type")
        if content_type is not None and content_type.split(";")[0].strip().lower() not in (
            "application/json",
            "",
        ):
            raise HTTPError(
                415,
                f"Content-Type {content_type!r} is not supported; "
                "send JSON with Content-Type: application/json",
                reason="bad_content_type",
            )
        try:
            credential = self.auth.publisher(header(scope, b"authorization"))
        except AuthError as exc:
            raise HTTPError(
                exc.status, exc.message, _www_authenticate(exc), reason=exc.reason
            ) from None
        wait = self.publish_limiter.take(credential.identity)
        if wait:
            raise HTTPError(
                429,
                "publish rate limit reached for this credential "
                f"({self.settings.publish_rate:g}/s)",
                [(b"retry-after", str(max(1, round(wait))).encode())],
                reason="publish_rate",
            )
        body = await self.read_body(scope, receive)
        try:
            requests = parse_publish_body(body, self.settings)
            self.auth.check_publish(credential, {t for r in requests for t in r.topics})
            ids = await self.hub.publish(requests)
        except PublishError as exc:
            raise HTTPError(exc.status, str(exc), reason="bad_publish") from None
        except AuthError as exc:
            raise HTTPError(exc.status, exc.message, reason=exc.reason) from None
        await send_json(send, 200, {"ids": ids}, self.cors_headers(scope))


STATS_PAGE = 1000
STATS_PAGE_MAX = 10_000


def _stats_query(scope: Scope) -> tuple[bool, int, int]:
    """``connections``, ``offset`` and ``limit`` of a ``/stats`` request (400 if bad)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    listing = query.get("connections", ["0"])[-1] not in ("0", "", "false")
    numbers = []
    for name, default, high in (("offset", 0, None), ("limit", STATS_PAGE, STATS_PAGE_MAX)):
        raw = query.get(name, [str(default)])[-1]
        if not raw.isdigit() or (high is not None and not 1 <= int(raw) <= high):
            bound = f"a whole number from 1 to {high}" if high else "a whole number from 0"
            raise HTTPError(400, f"{name} must be {bound}, got {raw!r}", reason="bad_query")
        numbers.append(int(raw))
    return listing, numbers[0], numbers[1]


def _www_authenticate(error: AuthError) -> list[tuple[bytes, bytes]]:
    if error.status != 401:
        return []
    return [(b"www-authenticate", b'Bearer realm="sse_fast"')]


def create_app() -> App:
    """Factory for ASGI servers: settings come from ``SSE_FAST_*`` variables."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    return App(settings)
