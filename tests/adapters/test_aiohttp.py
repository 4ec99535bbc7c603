"""sse_fast.aiohttp under a real aiohttp server (``python -m aiohttp.web``): the
events a client parses are aiohttp-sse's for the same calls; TCP_USER_TIMEOUT
follows send_timeout; 1,000 vanished clients leave no stream or task; SIGTERM
ends open streams (``wait()`` returns) so the server exits at once. Real processes: an
aiohttp server of its own, its sockets and its SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

import pytest

from sse_fast.testing import HOST, ServerProcess, SSEClient, collect

from ..support.status_probe import (
    seconds_to_notice_leaving,
    vanish_rounds,
)

pytest.importorskip("aiohttp_sse")

COMMAND = [
    sys.executable, "-m", "aiohttp.web", "-H", HOST, "-P", "{port}",
    "tests.support.aiohttp_app:make_app",
]  # fmt: skip


@pytest.fixture
def server() -> Any:
    with ServerProcess(command=COMMAND) as server:
        yield server


async def _events(port: int, path: str, count: int) -> list[tuple[Any, ...]]:
    client = SSEClient(HOST, port, [], path=path, extra_query={"n": str(count)})
    await client.connect()
    assert client.response_headers["content-type"].startswith("text/event-stream")
    events = await collect(client, count + 2, timeout=10)
    assert client.closed
    return [(e.event, e.data, e.id) for e in events]


@pytest.mark.processes("an aiohttp server process: its sockets and its SIGTERM")
def test_the_same_calls_give_the_events_aiohttp_sse_gives(server: ServerProcess) -> None:
    async def main() -> None:
        ours = await _events(server.port, "/count", 20)
        theirs = await _events(server.port, "/count-theirs", 20)
        assert ours == theirs and len(ours) == 21
        assert ours[0] == ("count", "event 0\nsecond\nthird", "0")
        client = SSEClient(HOST, server.port, [], path="/sockopt")
        await client.connect()
        (event,) = await collect(client, 1, timeout=10)
        assert event.data == "7000"  # send_timeout=7 -> TCP_USER_TIMEOUT 7,000 ms
        client.close()

    asyncio.run(main())


@pytest.mark.processes("an aiohttp server process: its sockets and its SIGTERM")
def test_a_thousand_vanished_clients_leave_nothing_behind(server: ServerProcess) -> None:
    """Half the streams write (/endless), half only wait (/wait)."""
    paths = ["/endless", "/wait"] * 500
    asyncio.run(vanish_rounds(server.port, paths, {"finished": 500, "waited": 500}))


@pytest.mark.processes("an aiohttp server process: its sockets and its SIGTERM")
def test_sigterm_ends_open_streams_and_the_server_exits(server: ServerProcess) -> None:
    async def main() -> None:
        clients = [SSEClient(HOST, server.port, [], path=p) for p in ["/wait", "/endless"] * 10]
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(collect(c, 1, timeout=10) for c in clients))
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(collect(c, 10**6, timeout=10) for c in clients))
        assert all(c.closed for c in clients)
        assert time.monotonic() - started < 6  # not run_app's 60 s shutdown_timeout

    asyncio.run(main())
    assert server.proc is not None
    assert server.proc.wait(10) is not None


@pytest.mark.processes("an aiohttp server process: its sockets and its SIGTERM")
def test_a_handler_that_only_waits_learns_of_a_leaving_client_within_seconds(
    server: ServerProcess,
) -> None:
    """``wait()`` returns for 20 clients that left (10 FIN, 10 RST) within 3 s:
    the ping task looks at the transport every second (aiohttp-sse's ``wait()``
    returns only when a ping's write fails, ``ping_interval`` later)."""
    took = asyncio.run(seconds_to_notice_leaving(server.port, "/wait", "waited"))
    assert took < 3


def _in_process(handler: Any, path: str = "/") -> bytes:
    """The whole body of one request to ``handler`` in a real aiohttp server."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def main() -> bytes:
        app = web.Application()
        app.router.add_get(path, handler)
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path)
            assert response.status == 200
            return await response.read()

    return asyncio.run(main())


def test_await_sse_response_prepares_the_response_as_aiohttp_sse_2_did() -> None:
    from sse_fast.aiohttp import sse_response

    async def handler(request: Any) -> Any:
        response = await sse_response(request)  # 2.x's form: prepared, ended by us
        assert response.prepared and response.is_connected()
        await response.send("one", id="1")
        response.stop_streaming()
        await response.wait()
        assert not response.is_connected()
        return response

    assert _in_process(handler) == b"id: 1\r\ndata: one\r\n\r\n"


@pytest.mark.parametrize("when_idle", [False, True])
def test_pings_go_out_every_interval_or_only_when_idle(when_idle: bool) -> None:
    """aiohttp-sse's schedule by default (``: ping`` every ``ping_interval`` seconds,
    events flowing or not); with ``ping_when_idle`` none while events flow."""
    from sse_fast.aiohttp import sse_response

    took: list[float] = []

    async def handler(request: Any) -> Any:
        async with sse_response(request, ping_interval=0.05, ping_when_idle=when_idle) as sse:
            started = time.monotonic()
            for n in range(30):
                await sse.send(str(n))
                await asyncio.sleep(0.01)  # pace: events flow, 10 ms apart
            took.append(time.monotonic() - started)
        return sse

    body = _in_process(handler)
    assert body.count(b"data: ") == 30
    pings = body.count(b": ping\r\n\r\n")
    if when_idle:
        assert pings == 0
    else:  # a ping every 0.05 s of the events' time (~0.3 s; longer on a busy machine)
        due = took[0] / 0.05
        assert max(1, due - 3) <= pings <= due + 1, (took, body)


def test_the_import_is_the_only_change() -> None:
    """aiohttp-sse's names, and every argument its response and ``sse_response`` take,
    by the same names, kinds and defaults (ours add ``ping_when_idle`` and ``compress``
    at the end)."""
    import inspect

    import aiohttp_sse

    import sse_fast.aiohttp as ours

    assert set(aiohttp_sse.__all__) <= set(ours.__all__)
    for name in ("EventSourceResponse.__init__", "sse_response"):
        theirs_obj, ours_obj = aiohttp_sse, ours
        for part in name.split("."):
            theirs_obj, ours_obj = getattr(theirs_obj, part), getattr(ours_obj, part)
        theirs = inspect.signature(theirs_obj).parameters
        mine = dict(inspect.signature(ours_obj).parameters)
        assert list(mine)[-2:] == ["ping_when_idle", "compress"]
        assert mine.pop("ping_when_idle").default is False and mine.pop("compress").default is False
        assert list(mine) == list(theirs), name
        for param, their in theirs.items():
            assert mine[param].kind == their.kind, (name, param)
            if param != "response_cls":  # (theirs defaults to their class, ours to ours)
                assert mine[param].default == their.default, (name, param)
    for constant in ("DEFAULT_PING_INTERVAL", "DEFAULT_SEND_TIMEOUT", "DEFAULT_SEPARATOR"):
        assert getattr(ours.EventSourceResponse, constant) == getattr(
            aiohttp_sse.EventSourceResponse, constant
        )


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_compress_true_flushes_every_event_in_the_coding_asked_for(coding: str) -> None:
    """The opt-in: ``compress=True`` and an ``Accept-Encoding``: ``Content-Encoding``
    and ``Vary``; each event decodes as it arrives (the handler sends the next only
    once the client decoded the one before: nothing waits in a buffer), pings too, and
    the end is whole; without the header the bytes are aiohttp-sse's."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from sse_fast.aiohttp import sse_response

    from ..support.decoding import Decoder

    async def main() -> None:
        seen: asyncio.Queue[int] = asyncio.Queue()

        async def handler(request: Any) -> Any:
            async with sse_response(request, compress=True, ping_interval=0.05) as sse:
                for n in range(3):
                    await sse.send(f"event {n}", id=str(n))
                    if "lockstep" in request.query:  # the next once the client decoded it
                        assert await asyncio.wait_for(seen.get(), 10) == n
            return sse

        app = web.Application()
        app.router.add_get("/", handler)
        async with TestClient(TestServer(app), auto_decompress=False) as client:
            response = await client.get("/?lockstep", headers={"Accept-Encoding": coding})
            assert response.headers["Content-Encoding"] == coding
            assert response.headers["Vary"] == "Accept-Encoding"
            decoder, text, told = Decoder(coding), b"", 0
            async for chunk in response.content.iter_any():
                text += decoder.feed(chunk)
                while told < text.count(b"data: event "):  # decoded: the handler goes on
                    seen.put_nowait(told)
                    told += 1
            assert decoder.ended() and told == 3
            assert text.replace(b": ping\r\n\r\n", b"") == b"".join(
                b"id: %d\r\ndata: event %d\r\n\r\n" % (n, n) for n in range(3)
            )
            plain = await client.get("/", headers={"Accept-Encoding": "identity"})
            assert "Content-Encoding" not in plain.headers
            assert (await plain.read()).startswith(b"id: 0\r\ndata: event 0\r\n\r\n")

    asyncio.run(main())
