"""sse_fast.starlette under the servers it claims: uvicorn (lazy ``send``),
hypercorn, Granian (eager ``send``). Each: the events arrive exact, a client
that leaves is noticed (close handler, generator closed, nothing left open),
1,000 vanished clients leave no stream or task behind, and SIGTERM ends open
streams cleanly (the response's last chunk arrives) so the server exits. Real processes:
the three servers themselves, their sockets and their SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sse_fast import Parser
from sse_fast.testing import HOST, ServerProcess, SSEClient, collect, http_request, wait_for

from ..support import asgi_servers
from ..support.status_probe import (
    seconds_to_notice_leaving,
    vanish_rounds,
)
from ..support.vanished_network import vanished_network_seconds
from ..support.waiting import until

APP = "tests.support.starlette_app:app"
SERVERS = asgi_servers.commands(APP)


pytestmark = pytest.mark.processes(
    "uvicorn, hypercorn and Granian serving the Starlette app, signals included"
)


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Any:
    with ServerProcess(command=SERVERS[request.param]) as server:
        yield server


def test_events_arrive_exact_and_the_stream_ends(server: ServerProcess) -> None:
    async def main() -> None:
        client = SSEClient(HOST, server.port, [], path="/count", extra_query={"n": "50"})
        await client.connect()
        assert client.response_headers["content-type"] == "text/event-stream; charset=utf-8"
        assert client.response_headers["x-accel-buffering"] == "no"
        events = await collect(client, 51, timeout=10)
        assert [(e.event, e.data, e.id) for e in events] == [
            ("count", f"event {i}\nsecond line", str(i)) for i in range(50)
        ]
        assert client.closed  # the response ended after the last event
        client = SSEClient(
            HOST, server.port, [], path="/last-event-id", headers={"Last-Event-ID": "caf\u00e9"}
        )
        _, _, body = await http_request(
            HOST, server.port, "GET", "/last-event-id", headers={"Last-Event-ID": "caf\u00e9"}
        )
        assert body.decode() == repr("caf\u00e9")

    asyncio.run(main())


def test_a_thousand_vanished_clients_leave_nothing_behind(server: ServerProcess) -> None:
    paths = ["/endless"] * 1000
    asyncio.run(vanish_rounds(server.port, paths, {"closed": 1000, "finished": 1000}))


def test_sigterm_ends_open_streams_cleanly_and_the_server_exits(server: ServerProcess) -> None:
    async def main() -> list[SSEClient]:
        clients = [SSEClient(HOST, server.port, [], path="/endless") for _ in range(20)]
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(collect(c, 2, timeout=10) for c in clients))
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(collect(c, 10**6, timeout=10) for c in clients))
        assert all(c.closed for c in clients)  # each response ended (its last chunk came)
        assert time.monotonic() - started < 5
        return clients

    asyncio.run(main())
    assert server.proc is not None
    assert server.proc.wait(10) is not None


H2_SERVERS = {
    "hypercorn": SERVERS["hypercorn"],
    "granian": asgi_servers.command(APP, "granian", http="2"),
}


@pytest.mark.parametrize("name", sorted(H2_SERVERS))
def test_over_http2_the_stream_has_no_connection_header(name: str) -> None:
    """A real HTTP/2 client (httpx with h2, prior knowledge over cleartext): the
    response carries no Connection header (forbidden in HTTP/2) and the events
    arrive exact."""
    import httpx

    from sse_fast import Parser

    async def main(port: int) -> None:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
            url = f"http://{HOST}:{port}/count?n=5"
            async with client.stream("GET", url) as response:
                assert response.http_version == "HTTP/2"
                assert "connection" not in response.headers
                assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                parser = Parser()
                events = []
                async for chunk in response.aiter_bytes():
                    events += parser.feed(chunk)
        assert [(e.event, e.id) for e in events] == [("count", str(i)) for i in range(5)]

    # an HTTP/2-only Granian cannot answer ServerProcess's HTTP/1.1 readiness probe
    with _listening(ServerProcess(command=H2_SERVERS[name])) as port:
        asyncio.run(main(port))


@contextlib.contextmanager
def _listening(server: ServerProcess) -> Iterator[int]:
    """Start ``server``; its port once it accepts connections and has loaded the app."""
    import httpx

    server.log = open(server.log_path, "wb")  # noqa: SIM115 - closed below
    server.left_behind = []
    server.proc = proc = subprocess.Popen(
        server.command,
        env=server.env,
        stdout=server.log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> bool:
        """The app answers /readyz over HTTP/2 (loaded, not only the socket bound)."""
        if proc.poll() is not None:
            raise RuntimeError(f"no server on {server.port}:\n{server.output()}")
        try:
            with httpx.Client(http1=False, http2=True, timeout=2) as client:
                return client.get(f"http://{HOST}:{server.port}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        until(ready, 20, f"the app answering on {server.port}", every=0.05)
        yield server.port
    finally:
        server.stop()
        server.remove_files()


def test_a_client_that_leaves_is_noticed_within_two_seconds(server: ServerProcess) -> None:
    """The close handler runs for 20 clients (10 FIN, 10 RST) within 2 s of their
    leaving: the server's ``http.disconnect``, taken as it comes."""
    took = asyncio.run(seconds_to_notice_leaving(server.port, "/endless", "closed"))
    assert took < 2


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_a_client_whose_network_vanished_is_noticed(name: str) -> None:
    """No FIN, no RST, nothing acknowledged (iptables drops every packet to the
    client, in a network namespace of its own): the stream of /idle (pings every
    0.2 s, send_timeout 1 s) ends within ping + send_timeout and the kernel's
    retransmission steps. Without TCP_USER_TIMEOUT it would take ~15 minutes."""
    seconds = vanished_network_seconds("starlette", name)
    assert seconds is not None and seconds < 4, seconds


# ---------------------------------------------------------------- a saturated loop


async def _chunks(port: int, path: str, timeout: float = 20.0) -> list[bytes]:
    """GET ``path`` over HTTP/1.1 and return the response body's chunks as they
    were framed (one chunk per ``send`` of the app: uvicorn, hypercorn and Granian
    frame each body message as a chunk of its own)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head
        chunks = []
        async with asyncio.timeout(timeout):
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    return chunks
                chunks.append(data[:-2])
    finally:
        writer.close()


async def _pacer(server: ServerProcess) -> dict[str, Any]:
    status, _, body = await server.get("/pacer")
    assert status == 200
    return dict(json.loads(body))


@pytest.mark.alone  # chunks per timer tick, and the pacer's measure of the loop
@pytest.mark.parametrize("name", ["granian", "uvicorn"])
def test_a_saturated_loop_sends_close_events_in_fewer_writes_and_loses_none(name: str) -> None:
    """The usual app (a queue per stream, events 5 ms apart) with ``coalesce=True``
    under a real server: one chunk per event while the loop is idle; while the loop is saturated
    (/saturate keeps it busy), the adapter's pacer turns busy and the same events
    come in a chunk per tick (busy_batch_delay, 0.05 s), every one, in order; once
    the load is gone and the hold (0.5 s here) is over, one chunk per event again."""

    def events(chunks: list[bytes]) -> list[str | None]:
        return [e.id for e in Parser().feed(b"".join(chunks))]

    async def main(server: ServerProcess) -> None:
        # a stream open all along: the pacer measures the loop while streams are open
        watcher = SSEClient(HOST, server.port, [], path="/endless", extra_query={"coalesce": "1"})
        await watcher.connect()
        path = "/queued?n=60&gap=0.005&coalesce=1"
        idle = await _chunks(server.port, path)
        assert events(idle) == [str(n) for n in range(60)]
        assert len(idle) >= 50, len(idle)  # (a chunk may carry two: timers are not exact)
        assert not (await _pacer(server))["busy"]

        # saturated until the chunks below are read (10 s at most)
        status, _, _ = await http_request(HOST, server.port, "POST", "/saturate?seconds=10")
        assert status == 200

        async def busy_now() -> bool:
            return bool((await _pacer(server))["busy"])

        async def idle_now() -> bool:
            return not await busy_now()

        await wait_for(busy_now, 2, 0.05, "the pacer saw the loop saturated")
        # half as many events: the spinning loop runs the producer about every 40 ms,
        # ~1.2 s for 30 (the loop saturated all along)
        busy = await _chunks(server.port, path.replace("n=60", "n=30"))
        assert events(busy) == [str(n) for n in range(30)]
        # ~3 events per tick of the pacer (0.05 s, late by up to a slice of the spin), so
        # 10 or 11 chunks (a late tick now and then splits one), two events a chunk at
        # the least, where the idle loop wrote a chunk per event or nearly
        assert len(busy) <= 15, len(busy)
        status, _, _ = await http_request(HOST, server.port, "DELETE", "/saturate")
        assert status == 200

        # (the deadline: the hold, 0.5 s, and a try of two windows, with room)
        await wait_for(idle_now, 0.5 + 2, 0.1, "the pacer not busy after the load")
        again = await _chunks(server.port, path)
        assert events(again) == [str(n) for n in range(60)] and len(again) >= 50
        assert (await _pacer(server))["engaged"] == 1
        watcher.close()

    with ServerProcess(command=SERVERS[name]) as server:
        asyncio.run(main(server))
