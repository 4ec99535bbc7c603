"""Helpers of the in-process auth, admission and CORS tests: an app that checks
credentials (HS256 with ``SECRET``), tokens, and publishing over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jwt

from sse_fast.app import App
from sse_fast.settings import Settings

from .asgi_harness import request

SECRET = "test-secret-that-is-long-enough-for-hs256"


def token(
    rights: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256", **claims: Any
) -> str:
    return jwt.encode({"sse_fast": rights, "sub": "tester", **claims}, key, algorithm=algorithm)


def make_app(**settings: Any) -> App:
    settings.setdefault("jwt_secret", SECRET)
    return App(Settings(**settings))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def publish(
    app: App, body: dict[str, Any], auth: str | None = None, **headers: str
) -> tuple[int, dict[str, str], dict[str, Any]]:
    if auth is not None:
        headers["authorization"] = auth
    status, response_headers, raw = await request(
        app, "POST", "/publish", json.dumps(body).encode(), headers=headers
    )
    return status, response_headers, json.loads(raw) if raw else {}
