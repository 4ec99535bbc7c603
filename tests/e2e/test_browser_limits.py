"""A browser's ``EventSource`` refused for now keeps trying: over ``max_connections``
it is told to come back (a 200 of one ``sse-fast-disconnect`` frame with a
``retry``), where the 503 it got before ended it for good, and it gets its stream
once a slot is free. Real Chromium (``tests/support/browser.py``) and a real server: what
an ``EventSource`` does with each answer is the browser's own."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from sse_fast.testing import HOST, ServerProcess

from ..support.waiting import until

PUBLISH = """() => fetch("/publish", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({topic: "t", data: "room at last"}),
}).then((r) => r.status)"""


pytestmark = pytest.mark.processes("Chromium's EventSource told to come back by a real server")


def _hold_the_slot(port: int) -> socket.socket:
    """A stream from the test itself: the worker's one slot, held until closed."""
    sock = socket.create_connection((HOST, port), 10)
    sock.sendall(b"GET /events?topic=held HTTP/1.1\r\nHost: test\r\n\r\n")
    head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200") and b"sse-fast-come-back" not in head, head
    return sock


def _subscribers(server: ServerProcess, topic: str) -> int:
    """The streams the server holds on ``topic`` (its ``/stats``)."""
    with urllib.request.urlopen(server.url + "/stats", timeout=10) as answer:
        return int(json.load(answer).get("topics", {}).get(topic, {}).get("subscribers", 0))


def test_a_browser_over_the_connection_limit_comes_back_when_a_slot_frees() -> None:
    from ..support.browser import chromium, watch_event_source

    with (
        chromium() as browser,
        ServerProcess("--workers", "1", max_connections=1, retry_ms=300) as server,
    ):
        page = browser.new_page()
        page.goto(server.url + "/livez")  # the page's origin: the server's
        held = _hold_the_slot(server.port)
        try:
            page.evaluate(watch_event_source("/events?topic=t"))
            # told more than once: the browser came back after each retry
            page.wait_for_function("() => window.seen.told.length >= 2", timeout=30_000)
            assert not page.evaluate("window.seen.closed")
        finally:
            held.close()
        # a slot is free: the browser's next attempt is a stream, and it gets the event
        until(lambda: _subscribers(server, "t"), 30, "the browser's stream on t")
        assert page.evaluate(PUBLISH) == 200
        page.wait_for_function("() => window.seen.data.length >= 1", timeout=30_000)
        seen = page.evaluate("window.seen")
        page.evaluate("window.source.close()")
    assert not seen["closed"], seen
    assert set(seen["told"]) == {"max-connections"}, seen
    assert seen["data"][0] == "room at last", seen
