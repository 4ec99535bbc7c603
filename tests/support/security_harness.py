"""Helpers of the in-process auth, admission and CORS tests: an app that checks
credentials (HS256 with ``SECRET``), tokens, and publishing over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
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


def make_app(wall_clock: Callable[[], float] = time.time, **settings: Any) -> App:
    """An app checking HS256 tokens of ``SECRET``, their times read on ``wall_clock``."""
    settings.setdefault("jwt_secret", SECRET)
    return App(Settings(**settings), wall_clock=wall_clock)


class WallClock:
    """A wall clock a test moves (``now``, seconds since the epoch) instead of waiting."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
