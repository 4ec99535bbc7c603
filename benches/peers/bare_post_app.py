"""The floor for one publish request: a bare ASGI app under Granian, run the way
``sse-fast serve`` runs its app (``benches/single_publish.py`` starts it).

``POST`` reads the body and answers 200 with a small JSON body, doing nothing
with it; ``GET /healthz`` answers 200. ``BARE_STOP_AT_LENGTH=1``: stop reading
at the declared Content-Length (as sse_fast does: Granian then sends no empty
last message to wait for); else read until ``more_body`` is false, as a plain
app does.
"""

from __future__ import annotations

import os
import sys
from typing import Any

STOP_AT_LENGTH = os.environ.get("BARE_STOP_AT_LENGTH", "") == "1"
ANSWER = b'{"ids":["1"]}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"13")],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "POST":
        length = -1
        if STOP_AT_LENGTH:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    length = int(value)
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body", False) or 0 <= length <= size:
                break
    await send(START)
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    host, port = sys.argv[1], int(sys.argv[2])
    Granian(
        "bare_post_app:app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        workers=1,
        backlog=4096,
        backpressure=20_000 - 64,
        runtime_threads=1,
        http1_settings=HTTP1Settings(max_buffer_size=8192),
        log_level="warning",  # type: ignore[arg-type]
    ).serve()


if __name__ == "__main__":
    main()
