"""sse_fast.django under the ASGI servers it claims: uvicorn, hypercorn, Granian.
Each: the events arrive exact (async and sync generators), pings when idle,
a client that leaves is noticed within 2 s, 1,000 vanished clients leave no
stream or task behind, a client that stops reading is cut after send_timeout,
and SIGTERM ends open streams cleanly so the server exits. Real processes: the three
servers themselves, their sockets and their SIGTERM; one of each is shared by the tests
that leave it as they found it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
from typing import Any

import pytest

pytest.importorskip("django")

from sse_fast.testing import HOST, ServerProcess, SSEClient, collect, http_request

from ..support import asgi_servers
from ..support.status_probe import (
    read_status,
    seconds_to_notice_leaving,
    status_when,
    vanish_rounds,
)
from ..support.vanished_network import vanished_network_seconds

APP = "tests.support.django_app:application"
SERVERS = asgi_servers.commands(APP)


pytestmark = pytest.mark.processes(
    "uvicorn, hypercorn and Granian serving the Django app, signals included"
)


@pytest.fixture(
    scope="module",
    params=[pytest.param(n, marks=pytest.mark.xdist_group(f"django-{n}")) for n in sorted(SERVERS)],
)
def server(request: pytest.FixtureRequest) -> Any:
    """One server of each kind for the tests that leave it as they found it (their
    figures are read against a baseline of the app's ``/status``): one worker runs
    them one after the other (their xdist group), the server started once."""
    with ServerProcess(command=SERVERS[request.param]) as server:
        yield server


@pytest.fixture(params=sorted(SERVERS))
def own_server(request: pytest.FixtureRequest) -> Any:
    """A server of each kind of the test's own (the test stops it)."""
    with ServerProcess(command=SERVERS[request.param]) as server:
        yield server


def test_events_arrive_exact_and_the_stream_ends(server: ServerProcess) -> None:
    async def main() -> None:
        client = SSEClient(HOST, server.port, [], path="/count", extra_query={"n": "50"})
        await client.connect()
        headers = client.response_headers
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert headers["cache-control"] == "no-store"
        assert headers["x-accel-buffering"] == "no"
        events = await collect(client, 51, timeout=10)
        assert [(e.event, e.data, e.id) for e in events] == [
            ("count", f"event {i}\nsecond line", str(i)) for i in range(50)
        ]
        assert client.closed  # the response ended after the last event

        client = SSEClient(HOST, server.port, [], path="/sync-count", extra_query={"n": "20"})
        await client.connect()
        events = await collect(client, 21, timeout=10)
        assert [(e.data, e.id) for e in events] == [(f"sync {i}", str(i)) for i in range(20)]
        assert client.closed

        _, _, body = await http_request(
            HOST, server.port, "GET", "/last-event-id", headers={"Last-Event-ID": "caf\u00e9"}
        )
        assert body.decode() == repr("caf\u00e9")

    asyncio.run(main())


def test_an_idle_stream_is_pinged(server: ServerProcess) -> None:
    async def main() -> bytes:
        client = SSEClient(HOST, server.port, [], path="/idle", record=True)
        await client.connect()
        deadline = time.monotonic() + 5
        while client.raw.count(b": ping - ") < 3 and time.monotonic() < deadline:
            await asyncio.wait_for(client.events(), 5)
        client.close()
        return bytes(client.raw)

    raw = asyncio.run(main())
    assert raw.startswith(b"data: hello\r\n\r\n")
    assert re.search(rb": ping - [^\r\n]+\r\n\r\n", raw)  # the stream's line ends
    assert raw.count(b": ping - ") >= 3


def test_a_client_that_leaves_is_noticed_within_two_seconds(server: ServerProcess) -> None:
    took = asyncio.run(seconds_to_notice_leaving(server.port, "/endless", "finished"))
    assert took < 2


def test_a_thousand_vanished_clients_leave_nothing_behind(server: ServerProcess) -> None:
    asyncio.run(vanish_rounds(server.port, ["/endless"] * 1000, {"finished": 1000}))


def test_a_client_that_stops_reading_is_cut(server: ServerProcess) -> None:
    """/flood writes 64 KiB events; a client that reads nothing fills the
    buffers, and the write that cannot finish within send_timeout (1 s) ends
    the stream (its generator closed) and its connection (reset: the client's
    next reads reach the end)."""

    async def main() -> float:
        baseline = await read_status(server.port)
        reader, writer = await asyncio.open_connection(HOST, server.port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        status = await status_when(
            server.port, lambda s: s["finished"] > baseline["finished"], timeout=20
        )
        took = time.monotonic() - started
        assert status["finished"] == baseline["finished"] + 1, status
        assert status["open"] == 0
        with contextlib.suppress(ConnectionError):  # reset, or closed after the buffered bytes
            while await asyncio.wait_for(reader.read(1 << 20), 10):
                pass
        writer.close()
        return took

    took = asyncio.run(main())
    assert took < 10


def test_sigterm_ends_open_streams_cleanly_and_the_server_exits(own_server: ServerProcess) -> None:
    server = own_server

    async def main() -> None:
        clients = [SSEClient(HOST, server.port, [], path="/endless") for _ in range(20)]
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(collect(c, 2, timeout=10) for c in clients))
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(collect(c, 10**6, timeout=10) for c in clients))
        assert all(c.closed for c in clients)  # each response ended (its last chunk came)
        assert time.monotonic() - started < 5

    asyncio.run(main())
    assert server.proc is not None
    assert server.proc.wait(10) is not None


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_a_client_whose_network_vanished_is_noticed(name: str) -> None:
    """As for the Starlette adapter: /idle (pings every 0.2 s, send_timeout 1 s,
    request given) ends within seconds of the client's network vanishing."""
    seconds = vanished_network_seconds("django", name)
    assert seconds is not None and seconds < 4, seconds


def test_context_variables_hold_across_items() -> None:
    """A generator's context variable, set before its first item, is still set
    after each yield and can be reset in its finally (one context for all its
    steps). One server is enough: the context is the adapter's."""
    with ServerProcess(command=SERVERS["uvicorn"]) as server:

        async def main() -> list[str]:
            client = SSEClient(HOST, server.port, [], path="/context", extra_query={"name": "a"})
            await client.connect()
            events = await collect(client, 4, timeout=10)
            status = await status_when(server.port, lambda s: s.get("context_reset") == 1)
            assert status.get("context_reset") == 1
            return [e.data for e in events]

        assert asyncio.run(main()) == ["a 0", "a 1", "a 2"]


def test_head_gets_the_headers_without_starting_the_stream() -> None:
    import httpx

    with ServerProcess(command=SERVERS["uvicorn"]) as server:
        response = httpx.head(f"http://{HOST}:{server.port}/idle", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        status = asyncio.run(read_status(server.port))
        assert status["open"] == 0
        assert status["finished"] == 0  # the generator never ran
