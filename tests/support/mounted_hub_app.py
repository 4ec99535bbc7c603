"""A host Starlette application with the sse_fast hub mounted at /sse, for
tests/adapters/test_mounted_hub.py (under uvicorn and Granian).

    /readyz    the host's own route
    /notify    POST {"user": ..., "text": ...}: a route handler publishing in process
    /sse/...   the edge: /sse/events, /sse/publish, /sse/stats, ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from sse_fast.app import App
from sse_fast.hub import PublishRequest
from sse_fast.settings import Settings

edge = App(Settings.from_env())


async def readyz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def notify(request: Request) -> JSONResponse:
    body = await request.json()
    ids = await edge.hub.publish(
        [PublishRequest((f"user/{body['user']}",), {"text": body["text"]}, event="notice")]
    )
    return JSONResponse({"ids": ids})


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    async with edge.running():
        yield


app = Starlette(
    routes=[
        Route("/readyz", readyz),
        Route("/notify", notify, methods=["POST"]),
        Mount("/sse", app=edge),
    ],
    lifespan=lifespan,
)
