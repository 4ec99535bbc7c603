"""The command lines of the ASGI servers the framework adapters are tested under
(``ServerProcess(command=...)``; ``{port}`` is its port)."""

from __future__ import annotations

import sys

from sse_fast.testing import HOST

NAMES = ("granian", "hypercorn", "uvicorn")


def command(app: str, server: str, http: str = "1") -> list[str]:
    """``app`` (``module:attribute``) under ``server``; ``http="2"``: Granian or
    hypercorn speaking HTTP/2 (prior knowledge; hypercorn negotiates it anyway)."""
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", app, "--port", "{port}", "--no-access-log"]
    if server == "hypercorn":
        return [sys.executable, "-m", "hypercorn", app, "--bind", f"{HOST}:{{port}}"]
    return [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"),
        *("--port", "{port}", "--log-level", "warning", *(("--http", http) if http != "1" else ())),
        app,
    ]


def commands(app: str) -> dict[str, list[str]]:
    return {name: command(app, name) for name in NAMES}
