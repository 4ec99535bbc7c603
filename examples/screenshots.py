"""``python -m examples.screenshots``: a PNG of every example, as Chromium shows
it, into ``docs/screenshots/`` (the README shows them).

Starts ``python -m examples`` on a free port (publishers at their normal pace,
chat messages in a temporary directory), opens each page in headless Chromium
(the system's ``chromium``, driven by Playwright), does what a visitor would
(sends chat messages from two browsers, asks the model, runs the task), waits
for the page to fill, and saves it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .vendor import ensure

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("python -m examples exited early")
        try:
            with urllib.request.urlopen(url + "/sse/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("python -m examples did not become ready")


def shoot(url: str, out: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1000, "height": 720})
        other = browser.new_context()

        def save(page: object, name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path))  # type: ignore[attr-defined]
            saved.append(path)
            # its streams end: a browser has six HTTP/1.1 connections per origin
            page.close()  # type: ignore[attr-defined]

        page = context.new_page()
        page.goto(url + "/datastar")
        page.wait_for_function("document.querySelectorAll('#feed li').length >= 10", timeout=30_000)
        save(page, "datastar")

        page = context.new_page()
        page.goto(url + "/htmx")
        page.wait_for_function(
            "document.querySelectorAll('#readings li').length >= 12", timeout=30_000
        )
        save(page, "htmx")

        page = context.new_page()
        page.goto(url + "/chat?name=ada")
        friend = other.new_page()
        friend.goto(url + "/chat?name=linus")
        page.wait_for_function("document.getElementById('online').textContent === 'ada, linus'")
        for who, text in (
            (page, "Is the edge up?"),
            (friend, "40,000 streams and counting."),
            (page, "Then ship it."),
        ):
            who.fill("#text", text)
            who.click("#send button")
            page.locator("li.message", has_text=text).wait_for()
        save(page, "chat")

        page = context.new_page()
        page.goto(url + "/tokens")
        page.click("#ask button")
        page.click("#run button")
        page.locator("#answer-status", has_text="done").wait_for(timeout=30_000)
        page.locator("#task-status", has_text="complete").wait_for(timeout=30_000)
        save(page, "tokens")

        page = context.new_page()
        page.goto(url + "/dashboard")
        page.wait_for_function("parseInt(document.getElementById('uptime').textContent) >= 3")
        save(page, "dashboard")

        page = context.new_page()
        page.goto(url + "/typed")
        alerts = "document.querySelectorAll('#alerts li').length >= 1"
        page.wait_for_function(alerts, timeout=30_000)
        save(page, "typed")

        page = context.new_page()
        page.goto(url + "/reference")
        page.wait_for_function("document.querySelectorAll('#log tr').length >= 5")
        save(page, "reference")

        page = context.new_page()
        page.goto(url + "/notifications")
        page.wait_for_function("document.querySelectorAll('#log tr').length >= 8", timeout=30_000)
        save(page, "notifications")
        browser.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.screenshots")
    parser.add_argument("--out", type=Path, default=OUT, help=f"directory (default {OUT})")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("python -m examples.screenshots needs Chromium: apt-get install chromium")
    ensure(quiet=True)
    args.out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="sse-fast-shots-") as data:
        env = {**os.environ, "SSE_FAST_EXAMPLES_DATA": data}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples", "--port", str(port)], env=env, cwd=ROOT
        )
        try:
            _wait_ready(url, proc)
            for path in shoot(url, args.out, chromium):
                print(path)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
