"""Every example in one Starlette application (``create_app``).

    /                 the index of examples
    /datastar ...     the pages (``pages/*.html``; /notifications subscribes by pattern)
    /chat/..., /tokens/stream, /tasks/stream   the Starlette adapter's streams
    /sse/...          the edge (``sse_fast.app.App``): /sse/events, /sse/stats, ...
    /static/...       the style sheet and the pinned JavaScript (``examples.vendor``)

The edge's settings come from the environment (``SSE_FAST_*``, as for ``sse-fast
serve``): its hub is in this process, and the examples publish into it with
``Hub.publish``. Publishing over HTTP (``/sse/publish``) needs a credential as
usual. ``SSE_FAST_EXAMPLES_DATA`` is the directory of the chat's messages;
``SSE_FAST_EXAMPLES_PACE`` divides the background publishers' intervals (the
browser tests run them 10 times faster).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sse_fast.app import App
from sse_fast.settings import Settings

from . import (
    chat,
    dashboard,
    datastar_stats,
    htmx_sensors,
    notifications,
    reference,
    tokens,
    typed_events,
)
from .vendor import PINNED

log = logging.getLogger("examples")
HERE = Path(__file__).parent
PAGES = HERE / "pages"

#: (path, title, what it shows)
EXAMPLES = (
    ("/datastar", "Live statistics and activity", "Datastar signals and element patches"),
    ("/htmx", "Sensor feed", "htmx sse extension, HTML fragments, reconnect"),
    ("/chat", "Chat", "POST to send, join/leave, history, resume"),
    ("/tokens", "Token streaming and task progress", "token, progress, done/complete"),
    ("/dashboard", "The edge, live", "connections, events/s, topics"),
    ("/reference", "Plain EventSource", "named events, ids, retry, resume"),
    ("/typed", "Typed channels", "declared events, a generated TypeScript client"),
    ("/notifications", "Notifications by pattern", "one stream of user/42/*, new topics too"),
)


def data_directory() -> Path:
    path = Path(
        os.environ.get("SSE_FAST_EXAMPLES_DATA")
        or os.path.join(tempfile.gettempdir(), "sse-fast-examples")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def pace() -> float:
    raw = os.environ.get("SSE_FAST_EXAMPLES_PACE", "1")
    try:
        value = float(raw)
    except ValueError:
        value = 0
    if not 0 < value <= 1000:
        raise ValueError(f"SSE_FAST_EXAMPLES_PACE: a number above 0, at most 1000; got {raw!r}")
    return value


async def supervised(name: str, job: Callable[[], Awaitable[None]]) -> None:
    """Run a background publisher; when it fails, say why and start it again."""
    while True:
        try:
            await job()
            return
        except Exception:
            log.exception("example %s failed; starting it again in 1 s", name)
            await asyncio.sleep(1)


def render(name: str, **values: str) -> HTMLResponse:
    page = (PAGES / f"{name}.html").read_text(encoding="utf-8")
    for key, value in values.items():
        page = page.replace("{{" + key + "}}", value)
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def create_app(settings: Settings | None = None) -> Starlette:
    edge = App(settings or Settings.from_env())
    edge.hub.declare(*typed_events.streams)
    stats = datastar_stats.PlatformStats()
    room = chat.ChatRoom(data_directory() / "chat.jsonl")

    async def index(request: Request) -> Response:
        items = "".join(
            f'<li><a href="{path}">{html.escape(title)}</a> <small>{html.escape(what)}</small></li>'
            for path, title, what in EXAMPLES
        )
        libraries = ", ".join(f"{p.name} {p.version}" for p in PINNED)
        return render("index", EXAMPLES=items, LIBRARIES=html.escape(libraries))

    async def datastar_page(request: Request) -> Response:
        return render("datastar", **datastar_stats.page_context(stats))

    def page(name: str) -> Route:
        async def endpoint(request: Request) -> Response:
            return render(name)

        return Route(f"/{name}", endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with edge.running():
            hub, speed = edge.hub, pace()
            tasks = [
                asyncio.create_task(supervised(name, job))
                for name, job in (
                    ("datastar", lambda: datastar_stats.run(hub, stats, speed)),
                    ("htmx", lambda: htmx_sensors.run(hub, speed)),
                    ("dashboard", lambda: dashboard.run(hub, speed)),
                    ("reference", lambda: reference.run(hub, speed)),
                    ("typed", lambda: typed_events.run(hub, speed)),
                    ("notifications", lambda: notifications.run(hub, speed)),
                )
            ]
            try:
                yield
            finally:
                for job in tasks:
                    job.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/datastar", datastar_page),
            page("htmx"),
            page("chat"),
            page("tokens"),
            page("dashboard"),
            page("reference"),
            page("typed"),
            page("notifications"),
            Route("/chat/send", chat.send, methods=["POST"]),
            Route("/chat/stream", chat.stream),
            Route("/tokens/stream", tokens.tokens),
            Route("/tasks/stream", tokens.task),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
            Mount("/sse", app=edge),
        ],
        lifespan=lifespan,
    )
    app.state.chat = room
    app.state.edge = edge
    return app
