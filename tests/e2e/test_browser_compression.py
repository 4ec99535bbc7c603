"""Chromium's ``EventSource`` reads compressed streams from ``sse-fast serve``: gzip and
zstd, every event delivered as it is published (each arrives before the next is
sent: nothing waits in a buffer), first as a stream joining its topic, then in step
with the topic's shared compressor beside other subscribers. Real Chromium
(``tests/support/browser.py``) and a real server: the decoding is the browser's own."""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import pytest

from sse_fast.hub._coding import SHARED_FROM
from sse_fast.testing import HOST, ServerProcess

from ..support.waiting import until

pytestmark = pytest.mark.processes("Chromium's EventSource decoding a real server's streams")

#: the page's ``EventSource``, each message kept with its arrival time
WATCH = """() => {
    window.got = [];
    window.opened = 0;
    const source = new EventSource("/events?topic=t");
    source.onopen = () => { window.opened += 1; };
    source.onmessage = (e) => { window.got.push({data: e.data, at: performance.now()}); };
    window.source = source;
}"""

#: one publish from the page, its sending time kept
PUBLISH = """async (n) => {
    window.sent = window.sent || [];
    window.sent.push(performance.now());
    const body = {topic: "t", data: {type: "order.updated", n: n,
        order: {id: "ord_" + String(n).padStart(6, "0"), status: "shipped", total: n * 3},
        customer: {tier: "gold", region: "eu-west"}}};
    const answer = await fetch("/publish", {method: "POST",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    return answer.status;
}"""


def _listeners(port: int, coding: str, count: int) -> list[socket.socket]:
    """``count`` compressed streams of topic t from the test itself (they never read:
    the kernel's buffers hold these small events), so that the topic compresses with
    a shared compressor."""
    out = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port), 10)
        sock.sendall(
            b"GET /events?topic=t HTTP/1.1\r\nHost: test\r\nAccept-Encoding: "
            + coding.encode()
            + b"\r\n\r\n"
        )
        out.append(sock)
    return out


def _connections(server: ServerProcess) -> list[dict[str, Any]]:
    with urllib.request.urlopen(server.url + "/stats?connections=1", timeout=10) as answer:
        return list(json.load(answer).get("connection_list", []))


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_chromium_reads_a_compressed_stream_event_by_event(coding: str) -> None:
    from ..support.browser import chromium

    with (
        chromium() as browser,
        ServerProcess("--workers", "1", compression_codings=coding) as server,
    ):
        listeners = _listeners(server.port, coding, SHARED_FROM)
        try:
            until(lambda: len(_connections(server)) == SHARED_FROM, 30, "the test's streams")
            page = browser.new_page()
            responses: list[Any] = []
            page.on("response", lambda r: responses.append(r) if "/events" in r.url else None)
            page.goto(server.url + "/livez")  # the page's origin: the server's
            page.evaluate(WATCH)
            page.wait_for_function("() => window.opened >= 1", timeout=30_000)
            until(lambda: len(_connections(server)) == SHARED_FROM + 1, 30, "the browser's")

            published = 0

            def publish_one() -> None:
                nonlocal published
                assert page.evaluate(PUBLISH, published) == 200
                published += 1
                # delivered before anything else is sent: no event waits for a buffer
                page.wait_for_function(f"() => window.got.length >= {published}", timeout=10_000)

            def all_in_step() -> bool:
                publish_one()  # a point comes with a publish, seconds into a segment
                modes = [c["compression"] for c in _connections(server)]
                return modes == ["shared"] * (SHARED_FROM + 1)

            # the browser's stream joins: its opening, and events until the topic's next
            # resynchronisation point, are independent writes, then the shared bytes
            until(all_in_step, 30, "the browser's stream in step with the topic's compressor")
            for _ in range(5):  # in step: the shared bytes, decoded by the browser
                publish_one()
            got = page.evaluate("window.got")
            sent = page.evaluate("window.sent")
            page.evaluate("window.source.close()")
        finally:
            for sock in listeners:
                sock.close()
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
    assert [r.headers.get("content-encoding") for r in responses] == [coding]
    assert [json.loads(g["data"])["n"] for g in got] == list(range(published))
    assert all(g["at"] >= s for g, s in zip(got, sent, strict=True))
    out = f'sse_fast_compression_output_bytes_total{{coding="{coding}"}} '
    into = f'sse_fast_compression_input_bytes_total{{coding="{coding}"}} '
    before = int(metrics.split(into, 1)[1].split()[0])
    after = int(metrics.split(out, 1)[1].split()[0])
    assert 0 < after < before / 2  # the topic's context: a fraction of the bytes
