"""The operations endpoints.

``GET /livez``, ``GET /healthz``, ``GET /readyz``
    Liveness and readiness, open to everyone: load balancers need them.
    ``/livez`` is 200 whenever the worker answers, from its first second (also
    while it restores history: ``_start.py``). ``/readyz`` is 503 while the
    worker starts (the body says how far: "restoring history (N of M
    events)"), and then until every worker of the node has started ("1 of 2
    workers started": a node ready while one of its workers still refuses
    with 503 "starting" would fail the requests the kernel gives that one;
    asked of the workers until they all have, once), while draining or while
    the broker cannot publish (the relay is away), and in mirror mode while
    the upstream is away for longer than ``upstream_ready_grace`` (its state is
    in the body); ``/healthz`` is 503
    only when the broker has been away for more than ``broker_down_limit``
    seconds (never while starting: it was not joined yet), so an orchestrator
    restarts a server that does not heal by itself.
``GET /presence?topic=NAME``
    Who is subscribed to a topic: ``{"subscribers", "subjects": {sub: n},
    "scope", "workers"}`` (``hub/_presence.py``); operations only, as it names
    subscribers.
``GET /schema``
    The declared typed streams (``sse_fast/schemas.py``) as JSON Schema, open to
    everyone: it is the contract of the events subscribers get (404 when no
    stream is declared).
``GET /metrics``, ``GET /stats[?connections=1][&offset=N][&limit=M]``
    Prometheus metrics and JSON figures for the whole server: whichever worker
    takes the request gathers every worker's figures through the broker and
    answers with their sum (counters, connections, subscribers per topic), a
    ``worker`` label or entry where a per-worker figure helps, and how many
    workers answered. They name clients and topics, so only clients from
    ``ops_networks`` (loopback by default) or with ``Authorization: Bearer
    <ops_token>`` may read them. ``/stats`` lists topics (and connections) a
    page at a time; with several workers the connection page is each worker's
    page at that offset.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from .._asgi import Receive, Scope, Send
from ..hub import Hub
from ..hub._catalogue import STATS_FIGURES, worker_of
from ..hub._cursor import format_cursor, parse_cursor
from ..hub._metrics import render
from ..publishing import PublishError
from ..settings import AccessSettings
from ._admission import ClientAddress
from ._auth import AuthError
from ._http import HTTPError, header, query, send_json, send_text
from ._ops_access import OperationsAccess
from ._start import WorkerStart

if TYPE_CHECKING:  # mirror mode's module needs httpx: imported only when it is on
    from ._upstream import Upstream

__all__ = ["Operations", "merge_stats", "stats_query"]

STATS_PAGE = 1000
STATS_PAGE_MAX = 10_000


class Operations:
    """The operations endpoints of one worker: ``/livez``, ``/healthz``, ``/readyz``,
    ``/presence``, ``/schema``, ``/metrics`` and ``/stats`` (the routes call these
    methods)."""

    def __init__(
        self,
        access: AccessSettings,
        hub: Hub,
        client_address: ClientAddress,
        start: WorkerStart,
        upstream: Upstream | None = None,
        *,
        workers: int,
        broker_down_limit: float,
        webhooks: bool,
    ) -> None:
        """``access``: who may read these endpoints; ``workers``: how many the node runs;
        ``broker_down_limit``: how long the broker may be away before ``/healthz`` fails
        (0: never); ``webhooks``: whether webhooks are on (their figures are shown)."""
        self.workers = workers
        self.broker_down_limit = broker_down_limit
        self.webhooks = webhooks
        self.hub = hub
        #: where the worker's start is (read only: the lifespan moves it)
        self.start = start
        self.access = OperationsAccess(access)
        self.client_address = client_address
        #: mirror mode's reader (its state is part of readiness)
        self.upstream = upstream
        #: True once every worker of the node has been seen started (``readyz``)
        self.node_started = False
        #: the question to the node's workers in flight, shared by ``readyz`` requests
        self._asking: asyncio.Future[str] | None = None

    async def presence(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Who is subscribed to one topic: ``?topic=NAME``. JSON with
        ``subscribers``, ``subjects`` (per JWT ``sub``), ``scope`` (``node``, or
        ``cluster`` on Redis for ``presence_topics``) and ``workers``. ``400`` without
        exactly one topic. Operations only (``ops_networks``, ``ops_token``)."""
        self.check_access(scope, "/presence")
        topics = query(scope, "utf-8").get("topic", [])
        if len(topics) != 1:
            raise HTTPError(400, "name one topic: /presence?topic=NAME", reason="bad_topic")
        try:
            figures = await self.hub.presence(topics[0])
        except PublishError as exc:
            raise HTTPError(400, str(exc), reason="bad_topic") from None
        await send_json(send, 200, {"topic": topics[0], **figures})

    async def schema(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The declared typed streams (``--schemas``) as JSON Schema: the contract
        of the events subscribers get, open to everyone. ``404`` when none is
        declared."""
        schemas = self.hub.schemas
        if not schemas:
            raise HTTPError(
                404,
                "no typed stream is declared (sse-fast serve --schemas module:attribute, "
                "or Hub.declare)",
                reason="not_found",
            )
        await send_json(send, 200, schemas.json_schema())

    async def livez(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Liveness of the process: ``200 {"status": "ok"}`` whenever the worker
        answers, from its first second, also while it restores history (then with
        ``"starting"``: what it is doing). Open to everyone."""
        body = {"status": "ok"}
        if self.start.pending:
            body["starting"] = self.start.doing()
        await send_json(send, 200, body)

    async def healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Liveness with the broker: ``200 {"status": "ok"}``; ``503`` only once the
        broker (the relay or Redis) has been unreachable longer than
        ``broker_down_limit`` (30 s), so an orchestrator restarts a server that does
        not heal; while the worker starts, 200 as ``/livez`` (the broker is not
        joined yet). Open to everyone."""
        if self.start.pending and not self.start.failure:
            await self.livez(scope, receive, send)
            return
        away = self.hub.broker.unavailable_for
        limit = self.broker_down_limit
        if limit and away > limit:
            await send_json(
                send,
                503,
                {
                    "status": "unhealthy",
                    "reason": f"the broker has been unreachable for {away:.0f} s "
                    f"(broker_down_limit {limit:g} s): restart the server",
                },
            )
            return
        await send_json(send, 200, {"status": "ok"})

    async def readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Readiness: ``200 {"status": "ready"}``; ``503`` while starting (``{"status":
        "starting", "reason": "restoring history (N of M events)"}``), then until
        every worker of the node has started (``"1 of 2 workers started"``), while
        draining, or while the broker is away (in mirror mode also while the
        upstream has been away longer than ``upstream_ready_grace``; its state is in
        the body). Open to everyone."""
        if self.start.pending:
            await send_json(send, 503, {"status": "starting", "reason": self.start.doing()})
            return
        hub = self.hub
        ready = not hub.draining and hub.broker.available
        body: dict[str, Any] = {}
        if ready and not self.node_started:
            waiting = await self._workers_starting()
            if waiting:
                await send_json(send, 503, {"status": "starting", "reason": waiting})
                return
        if self.upstream is not None:
            body["upstream"] = upstream = self.upstream.status()
            ready = ready and upstream["ready"]
        body = {"status": "ready" if ready else "not ready", **body}
        await send_json(send, 200 if ready else 503, body)

    async def _workers_starting(self) -> str:
        """Why this node is not ready while another of its workers has not started
        yet ("" once every one has, from then on without asking again: a worker
        that Granian starts again later says so itself). ``/readyz`` is open to
        everyone: requests that come while the workers are asked share that one
        question, so a client asking often costs the node no more gathers."""
        if self.workers <= 1:
            self.node_started = True
            return ""
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(self._ask_workers())
        return await asyncio.shield(self._asking)

    async def _ask_workers(self) -> str:
        expected = self.workers
        parts = await self.hub.gather({"what": "ready"})
        started = sum(1 for part in parts if not part.get("starting"))
        if started < expected:
            return f"{started} of {expected} workers started"
        self.node_started = True
        return ""

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Prometheus text format, for the whole server whichever worker answers:
        each metric is listed in the docs' metrics reference. Operations
        only (``ops_networks``, ``ops_token``)."""
        self.check_access(scope, "/metrics")
        figures = await self.hub.gather({"what": "metrics"})
        await send_text(
            send,
            200,
            render(figures, self.workers, webhooks=self.webhooks),
            b"text/plain; version=0.0.4; charset=utf-8",
        )

    async def stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        """JSON figures for the whole server: totals (``topics_total``,
        ``topics_with_history``, ``connections``), one page of the topics and, with
        ``?connections=1``, of the connections (client, topics, state, how far
        behind, ``worker``), and ``workers`` (each worker's pid, connections and
        relay link), ``native_core`` (false when a worker runs the pure-Python twins:
        ``SSE_FAST_NO_EXTENSIONS``, or a native core that did not load, which the
        worker's log says at startup). Paging: ``offset`` and ``limit`` (1 to 10,000, default 1,000;
        with several workers, each worker's page at that offset); ``next_offset`` is
        the next page's ``offset``, ``null`` after the last. ``400`` on a bad
        parameter. Operations only."""
        self.check_access(scope, "/stats")
        listing, offset, limit = stats_query(scope)
        figures = await self.hub.gather(
            {"what": "stats", "connections": listing, "offset": offset, "limit": limit}
        )
        stats = merge_stats(figures, listing)
        stats["workers_expected"] = self.workers
        stats["worker_pid"] = os.getpid()
        await send_json(send, 200, stats)

    def check_access(self, scope: Scope, path: str) -> None:
        """Return if the request's client may read the operations endpoint ``path``
        (``ops_networks``, ``ops_token``); else raise the ``HTTPError`` refusing it."""
        try:
            self.access.check(self.client_address(scope), header(scope, b"authorization"), path)
        except AuthError as exc:
            raise HTTPError.from_auth(exc) from None

    def render_metrics(self) -> str:
        """This worker's metrics alone (``/metrics`` gathers every worker's)."""
        return render([self.hub.report({"what": "metrics"})], 1, webhooks=self.webhooks)


def merge_stats(figures: list[dict[str, Any]], listing: bool) -> dict[str, Any]:
    """``/stats`` for the whole server from every worker's ``Hub.stats`` page."""
    figures = sorted(figures, key=worker_of)
    topics: dict[str, dict[str, int]] = {}
    for one in figures:
        for name, theirs in one["topics"].items():
            mine = topics.setdefault(name, dict(theirs, subscribers=0))
            mine["subscribers"] += theirs["subscribers"]
            for key in ("published", "retained", "retained_bytes", "evicted"):
                mine[key] = max(mine[key], theirs[key])  # every worker holds every event
    out: dict[str, Any] = {
        "connections": sum(one["connections"] for one in figures),
        "topics_total": max(one["topics_total"] for one in figures),
        "topics_with_history": max(one["topics_with_history"] for one in figures),
        "topics": topics,
        # every worker holds every topic's history: the fullest one's figures
        **{key: max(one.get(key, 0) for one in figures) for key in STATS_FIGURES},
        "last_id": _newest_id([one["last_id"] for one in figures]),
        "draining": any(one["draining"] for one in figures),
        "eager_send": next(
            (one["eager_send"] for one in figures if one["eager_send"] is not None), None
        ),
        "native_core": all(one.get("native_core", False) for one in figures),
        "workers_reporting": len(figures),
        "workers": [
            {
                "worker": worker_of(one),
                "pid": one["pid"],
                "connections": one["connections"],
                "draining": one["draining"],
                "starting": one.get("starting", False),
                "last_id": one["last_id"],
                **{key: one[key] for key in ("relay", "redis", *STATS_FIGURES) if key in one},
            }
            for one in figures
        ],
    }
    if listing:
        out["connection_list"] = [
            {**connection, "worker": worker_of(one)}
            for one in figures
            for connection in one["connection_list"]
        ]
    out["next_offset"] = next(
        (one["next_offset"] for one in figures if one["next_offset"] is not None), None
    )
    return out


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


def _newest_id(ids: list[str]) -> str:
    """The newest of the workers' last ids: the largest position, or (a broker of several
    partitions) the cursor of each partition's largest position."""
    if all(one.isdigit() for one in ids):
        return max(ids, key=int)
    newest: dict[int, int] = {}
    for one in ids:
        positions = parse_cursor(one) if not one.isdigit() else {0: int(one)}
        for partition, position in (positions or {}).items():
            newest[partition] = max(newest.get(partition, 0), position)
    return format_cursor(newest) if newest else ids[0]
