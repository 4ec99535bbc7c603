"""Token streaming from a simulated model, and a long task's progress, on the
Starlette adapter.

* ``GET /tokens/stream?prompt=...``: the answer as ``token`` events (the
  token's text as data, its index as id), a ``progress`` event (``{"percent":
  n}``) every 8 tokens, then ``done`` (``{"tokens": n, "finish_reason":
  "stop"}``) and the end of the stream. The page closes its ``EventSource`` on
  ``done``: a browser would otherwise reconnect to a stream that ended. A
  reconnect with ``Last-Event-ID`` continues after that token.
* ``GET /tasks/stream?steps=N``: ``progress`` events (``{"percent", "step",
  "of", "message"}``, id = the step) and ``complete`` at the end.

The model is a stand-in (no external service): its answer depends only on the
prompt, so a resumed answer is the same answer.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sse_fast.starlette import EventSourceResponse, last_event_id

from ._ids import message_id

TOKEN_DELAY = 0.03
STEP_DELAY = 0.1
PROGRESS_EVERY = 8
MAX_PROMPT = 500
MAX_STEPS = 100
_TOKEN = re.compile(r"\s*\S+")


def answer(prompt: str) -> list[str]:
    """The simulated model's answer to ``prompt``, as tokens (each word with the
    white space before it)."""
    text = (
        f"You asked: {prompt}\n\n"
        "Server-Sent Events carry a model's answer one token at a time over plain HTTP: "
        "each token is an event with an id, so a client that loses its connection "
        "reconnects with Last-Event-ID and continues after the last token it got. "
        "Progress events say how far the answer is, and a done event ends it."
    )
    return _TOKEN.findall(text)


def _resume_after(request: Request) -> int:
    """The index after the client's ``Last-Event-ID`` (0 without one, or with an
    id that is no index of ours)."""
    last = message_id(last_event_id(request))
    return 0 if last is None else last + 1


async def _tokens(prompt: str, start: int) -> AsyncIterator[dict[str, Any]]:
    tokens = answer(prompt)
    yield {"retry": 1000}
    for index in range(start, len(tokens)):
        await asyncio.sleep(TOKEN_DELAY)
        yield {"event": "token", "id": str(index), "data": tokens[index]}
        if (index + 1) % PROGRESS_EVERY == 0 or index + 1 == len(tokens):
            percent = round(100 * (index + 1) / len(tokens))
            yield {"event": "progress", "data": json.dumps({"percent": percent})}
    yield {"event": "done", "data": json.dumps({"tokens": len(tokens), "finish_reason": "stop"})}


async def tokens(request: Request) -> Response:
    prompt = request.query_params.get("prompt", "").strip()
    if not prompt or len(prompt) > MAX_PROMPT:
        return JSONResponse(
            {"error": f"prompt: give 1 to {MAX_PROMPT} characters (/tokens/stream?prompt=...)"},
            400,
        )
    return EventSourceResponse(_tokens(prompt, _resume_after(request)), ping=15, send_timeout=10)


async def _task(steps: int, start: int) -> AsyncIterator[dict[str, Any]]:
    yield {"retry": 1000}
    for step in range(max(start, 1), steps + 1):
        await asyncio.sleep(STEP_DELAY)
        progress = {
            "percent": round(100 * step / steps),
            "step": step,
            "of": steps,
            "message": f"processing part {step} of {steps}",
        }
        yield {"event": "progress", "id": str(step), "data": json.dumps(progress)}
    yield {"event": "complete", "data": json.dumps({"result": f"{steps} parts processed"})}


async def task(request: Request) -> Response:
    steps = message_id(request.query_params.get("steps", "20"))
    if steps is None or not 1 <= steps <= MAX_STEPS:
        return JSONResponse({"error": f"steps: a whole number from 1 to {MAX_STEPS}"}, 400)
    return EventSourceResponse(_task(steps, _resume_after(request)), ping=15, send_timeout=10)
