"""The operations endpoints.

``GET /healthz``, ``GET /readyz``
    Liveness and readiness (503 while draining, or while the broker cannot
    publish), open to everyone: load balancers need them.
``GET /metrics``, ``GET /stats[?connections=1][&offset=N][&limit=M]``
    Prometheus metrics and JSON figures. They name clients and topics, so only
    clients from ``ops_networks`` (loopback by default) or with
    ``Authorization: Bearer <ops_token>`` may read them. ``/stats`` lists topics
    (and connections) a page at a time.
"""

from __future__ import annotations

import os

from .. import metrics as metrics_module
from ..asgi import Receive, Scope, Send
from ..auth import AuthError, OperationsAccess
from ..hub import Hub
from ..settings import Settings
from .admission import ClientAddress
from .http import HTTPError, header, query, send_json, send_text

STATS_PAGE = 1000
STATS_PAGE_MAX = 10_000


class Operations:
    def __init__(self, settings: Settings, hub: Hub, client_address: ClientAddress) -> None:
        self.hub = hub
        self.access = OperationsAccess(settings)
        self.client_address = client_address
        #: False once the server is stopping (set by the lifespan)
        self.ready = True

    async def healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"status": "ok"})

    async def readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub = self.hub
        ready = self.ready and not hub.draining and hub.broker.available
        await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "not ready"})

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.check_access(scope, "/metrics")
        await send_text(
            send, 200, self.render_metrics(), b"text/plain; version=0.0.4; charset=utf-8"
        )

    async def stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.check_access(scope, "/stats")
        listing, offset, limit = stats_query(scope)
        stats = self.hub.stats(with_connections=listing, offset=offset, limit=limit)
        stats["worker_pid"] = os.getpid()
        await send_json(send, 200, stats)

    def check_access(self, scope: Scope, path: str) -> None:
        try:
            self.access.check(self.client_address(scope), header(scope, b"authorization"), path)
        except AuthError as exc:
            raise HTTPError.from_auth(exc) from None

    def render_metrics(self) -> str:
        hub = self.hub
        return metrics_module.render(
            hub.metrics,
            connections_open=len(hub.subscriptions),
            topics=len(hub.topics),
            subscribers_by_topic=hub.topics.busiest(100),
        )


def stats_query(scope: Scope) -> tuple[bool, int, int]:
    """``connections``, ``offset`` and ``limit`` of a ``/stats`` request (400 if bad)."""
    fields = query(scope)
    listing = fields.get("connections", ["0"])[-1] not in ("0", "", "false")
    numbers = []
    for name, default, high in (("offset", 0, None), ("limit", STATS_PAGE, STATS_PAGE_MAX)):
        raw = fields.get(name, [str(default)])[-1]
        if not raw.isdigit() or (high is not None and not 1 <= int(raw) <= high):
            bound = f"a whole number from 1 to {high}" if high else "a whole number from 0"
            raise HTTPError(400, f"{name} must be {bound}, got {raw!r}", reason="bad_query")
        numbers.append(int(raw))
    return listing, numbers[0], numbers[1]
