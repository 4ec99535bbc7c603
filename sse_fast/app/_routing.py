"""The ASGI application: requests to their endpoints, refusals answered alike.

Usable under any ASGI server; ``sse-fast serve`` runs it under Granian with
uvloop, where ``send`` is eager and the hub's fan-out needs no task per
delivery (``SendStyle`` in ``sse_fast/_asgi.py``). Endpoints: ``GET /events`` (``_events.py``),
``POST /publish`` (``_publish.py``), ``POST /publish/stream``
(``_publish_stream.py``), ``/livez``, ``/healthz``, ``/readyz``, ``/metrics``,
``/stats``, ``/schema`` (``_operations.py``), ``OPTIONS`` preflights (``_cors.py``).
While a worker starts under ``sse-fast serve`` only ``STARTING_ROUTES`` are
served, the others refused with 503 (``_start.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .. import _shutdown
from .._asgi import Receive, Scope, Send
from ..hub import Hub
from ..protocol import Reason
from ..settings import Settings
from ..settings._handoff import Handoff
from ._events import EventsEndpoint
from ._http import HTTPError, allow, send_json
from ._operations import Operations
from ._publish import PublishEndpoint
from ._publish_stream import PublishStreamEndpoint
from ._worker import NOT_UNDER_SERVE, worker_parts

__all__ = ["ROUTES", "STARTING_ROUTES", "App", "Route"]

log = logging.getLogger("sse_fast")

Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """One endpoint: its method and path, who may call it, and what serves it (a
    class of ``App``'s parts, or one of its methods). The serving object's
    docstring is the endpoint's entry in the HTTP reference (docs/reference/http.md)."""

    method: str
    path: str
    access: str
    owner: type
    attribute: str = ""

    def documented(self) -> Any:
        """The class or method whose docstring documents this endpoint."""
        return getattr(self.owner, self.attribute) if self.attribute else self.owner


#: every endpoint, in the order the HTTP reference lists them (``OPTIONS`` preflights
#: of the first three are answered by ``_cors.py``)
ROUTES = (
    Route("GET", "/events", "subscribers (topic rights when private)", EventsEndpoint),
    Route("POST", "/publish", "publishers (publish_token or a JWT)", PublishEndpoint),
    Route("POST", "/publish/stream", "publishers (as /publish)", PublishStreamEndpoint),
    Route("GET", "/livez", "everyone", Operations, "livez"),
    Route("GET", "/healthz", "everyone", Operations, "healthz"),
    Route("GET", "/readyz", "everyone", Operations, "readyz"),
    Route("GET", "/metrics", "operations (ops_networks, ops_token)", Operations, "metrics"),
    Route("GET", "/stats", "operations", Operations, "stats"),
    Route("GET", "/presence", "operations", Operations, "presence"),
    Route("GET", "/schema", "everyone", Operations, "schema"),
)
ENDPOINTS = ", ".join(route.path for route in ROUTES)
#: the endpoints a starting worker serves (``_start.py``); the others answer 503
STARTING_ROUTES = frozenset({"/livez", "/healthz", "/readyz", "/schema"})


class App:
    """The sse_fast ASGI application. ``app.hub`` is the in-process publish API."""

    def __init__(
        self,
        settings: Settings | None = None,
        hub: Hub | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        handoff: Handoff = NOT_UNDER_SERVE,
    ) -> None:
        """An app of ``settings`` (``Settings.from_env()`` when not given), its parts
        made once by the worker's composition root (``_worker.worker_parts``): on
        ``hub`` when given, else on the broker the settings choose. Tokens' ``exp``,
        ``nbf`` and ``iat`` are read against ``wall_clock`` (a test's own moves).
        ``handoff``: what ``sse-fast serve`` decided for its workers (``create_app``
        reads it); the default is an app no serve started."""
        made = worker_parts(settings or Settings.from_env(), hub, wall_clock, handoff)
        self.settings = made.settings
        self.hub = made.hub
        self.auth = made.auth
        self.admission = made.admission
        self.client_address = made.client_address
        self.cors = made.cors
        self.events = made.events
        self.publish = made.publish
        self.publish_stream = made.publish_stream
        #: where this worker's start is (``_start.py``)
        self.start = made.start
        self.operations = made.operations
        self.lifespan = made.lifespan
        parts: dict[type, Any] = {
            PublishEndpoint: self.publish,
            PublishStreamEndpoint: self.publish_stream,
            Operations: self.operations,
        }
        self._routes: dict[str, tuple[str, Endpoint]] = {
            route.path: (
                route.method,
                getattr(parts[route.owner], route.attribute)
                if route.attribute
                else parts[route.owner],
            )
            for route in ROUTES
            if route.path != "/events"  # served by __call__ directly
        }

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[App]:
        """The hub's life inside a host application that mounts this one (a mounted
        app gets no lifespan events of its own): start it on entry, drain and stop
        it on exit. Use it in the host's lifespan::

            edge = App(Settings.from_env())

            @contextlib.asynccontextmanager
            async def lifespan(app):
                async with edge.running():
                    yield

            app = Starlette(routes=[Mount("/sse", edge)], lifespan=lifespan)

        SIGTERM and SIGINT drain the streams at once (a handler chained in front of
        the server's, ``sse_fast/_shutdown.py``): servers such as uvicorn wait for
        open responses before they run the lifespan shutdown."""
        loop = asyncio.get_running_loop()
        drain: asyncio.Task[None] | None = None

        def start_drain() -> None:
            nonlocal drain
            if drain is None and not self.hub.draining:
                drain = loop.create_task(self.lifespan.drain())

        def drain_soon() -> None:  # from the signal handler: schedule only
            loop.call_soon_threadsafe(start_drain)

        await self.lifespan.startup()
        _shutdown.add(drain_soon)
        _shutdown.install()
        try:
            yield self
        finally:
            _shutdown.discard(drain_soon)
            if drain is not None:
                await drain
            await self.lifespan.shutdown()  # drains first, unless a signal did

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):  # mounted: the path below the mount point
                path = path[len(root) :] or "/"
            if path == "/events" and scope["method"] == "GET":
                if self.start.pending or self.hub.draining:  # a restart: come back, not 503
                    await self.come_back_later(scope, send)
                    return
                # the one long-lived handler: an idle stream waits in this frame, the
                # one every request has (memory per stream), not in one of its own
                try:
                    subscription = await self.events.open(scope, receive, send)
                except HTTPError as error:  # a come-back where retrying fixes it
                    if not await self.events.come_back_instead(scope, send, error):
                        await self.refuse(scope, send, error)
                    return
                try:
                    # the end: the client's http.disconnect, or the server closing it
                    await subscription.closed
                finally:
                    self.events.finish(scope, subscription)
                return
            if self.start.pending and path not in STARTING_ROUTES and scope["method"] != "OPTIONS":
                await self.refuse(scope, send, self.start.refusal())
                return
            await self.http(scope, receive, send, path)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def http(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Every request but ``GET /events`` (``path``: below the mount point)."""
        method = scope["method"]
        try:
            if method == "OPTIONS" and path in ("/events", "/publish", "/publish/stream"):
                await self.cors.preflight(scope, send)
            elif path == "/events":  # GET is served by __call__: only other methods get here
                allow(method, ("GET",))
            elif path in self._routes:
                allowed, endpoint = self._routes[path]
                allow(method, (allowed,))
                await endpoint(scope, receive, send)
            else:
                raise HTTPError(
                    404, f"no such endpoint {path!r}; see {ENDPOINTS}", reason="not_found"
                )
        except HTTPError as error:
            await self.refuse(scope, send, error)

    async def come_back_later(self, scope: Scope, send: Send) -> None:
        """A stream asked for while this worker starts or drains: told when to come back
        (``EventsEndpoint.come_back_later``), never refused with a status that ends an
        ``EventSource``."""
        if self.start.pending:
            reason = Reason.STARTING
            doing = f"this server serves no streams yet: {self.start.doing()}"
        else:
            reason, doing = Reason.DRAINING, "this server is shutting down"
        message = f"{doing}; reconnect after the retry, here or at another server"
        await self.events.come_back_later(scope, send, reason, message)

    async def refuse(self, scope: Scope, send: Send, error: HTTPError) -> None:
        """Answer ``error`` as JSON ``{"error": message}`` with its headers and CORS's, and count
        the refusal by its reason."""
        self.hub.metrics.refuse(error.reason)
        await send_json(
            send,
            error.status,
            {"error": error.message},
            [*error.headers, *self.cors.headers(scope)],
        )
