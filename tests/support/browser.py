"""A real Chromium for the page tests: the Debian package's binary, driven by
Playwright for Python (its driver only: no browser download). ``.ci/run``
installs both when missing; a machine without them fails with what to install,
never skips."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sse_fast.testing import ServerProcess

REPO = Path(__file__).resolve().parents[2]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(
        "the page tests need Chromium: apt-get install chromium (.ci/run installs it)"
    )


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync ``Browser``)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RuntimeError(
            "the page tests need Playwright for Python: pip install -e '.[test]'"
        ) from None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


def examples_server(*args: str, data: Path, pace: float = 10, port: int = 0) -> ServerProcess:
    """``python -m examples`` (a real process, from the repository), its chat
    messages in ``data``, its background publishers ``pace`` times faster. The
    pinned JavaScript is fetched first when missing (not within the server's
    start deadline)."""
    from examples.vendor import ensure

    ensure(quiet=True)
    server = ServerProcess(
        command=[sys.executable, "-m", "examples", "--port", "{port}", *args],
        port=port,
        ready_path="/sse/readyz",
        examples_data=str(data),
        examples_pace=str(pace),
    )
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    server.env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return server


def page_errors(page: Any) -> list[str]:
    """Collects the page's uncaught errors and console errors as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    return errors


def watch_event_source(url: str) -> str:
    """A page function opening ``window.source = new EventSource(url)`` and keeping in
    ``window.seen`` what a test asks about it: ``opened`` and ``errors`` (counts),
    ``closed`` (the browser gave up: readyState CLOSED), the ``ids`` and ``data`` of its
    messages, and the reasons it was ``told`` (``sse-fast-disconnect``)."""
    return """() => {
    window.seen = {opened: 0, errors: 0, closed: false, ids: [], data: [], told: []};
    const source = new EventSource(__URL__);
    source.onopen = () => { window.seen.opened += 1; };
    source.onerror = () => {
        window.seen.errors += 1;
        if (source.readyState === EventSource.CLOSED) window.seen.closed = true;
    };
    source.onmessage = (e) => {
        window.seen.ids.push(e.lastEventId);
        window.seen.data.push(e.data);
    };
    source.addEventListener("sse-fast-disconnect", (e) => {
        window.seen.told.push(JSON.parse(e.data).reason);
    });
    window.source = source;
}""".replace("__URL__", json.dumps(url))
