"""End to end against a real Granian process started by the tests. Real processes: a real
sse-fast serve from outside. The twins' run keeps this file (``twins``): its servers run
on the pure-Python twins there, the proof that a real server works on them."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import orjson
import pytest

import sse_fast
from sse_fast.testing import HOST, HTTPResponseError, ServerProcess, collect, rss_kb, wait_for

pytestmark = [
    pytest.mark.processes("a real sse-fast serve from outside"),
    pytest.mark.twins,
    # one worker runs the module: its server started once, not at each of several
    # workers' visits (pytest ends a module-scoped fixture when a worker moves on)
    pytest.mark.xdist_group("e2e"),
]


@pytest.fixture(scope="module")
def server():
    with ServerProcess(ring_max_frames=8, heartbeat_interval=0.3) as proc:
        yield proc


async def stats(server: ServerProcess) -> dict:
    status, _, body = await server.get("/stats")
    assert status == 200
    return json.loads(body)


def test_subscribe_and_publish(server: ServerProcess) -> None:
    async def main() -> None:
        client = server.client("news")
        await client.connect()
        assert client.response_headers["content-type"].startswith("text/event-stream")
        assert client.response_headers["cache-control"] == "no-store"
        assert client.response_headers["x-accel-buffering"] == "no"
        assert "connection" not in client.response_headers
        assert client.response_headers["sse-fast-resume"] == "none"
        status, _, body = await server.publish(b'{"topic":"news","data":{"n":1},"event":"update"}')
        assert status == 200
        (event_id,) = json.loads(body)["ids"]
        (event,) = await collect(client, 1)
        assert (event.event, event.data, event.id) == ("update", '{"n":1}', event_id)
        assert client.retry == 3000
        client.close()

    asyncio.run(main())


def test_multi_topic_and_batch(server: ServerProcess) -> None:
    async def main() -> None:
        client = server.client("a1", "b1")
        await client.connect()
        body = {
            "events": [
                {"topic": "a1", "data": "one"},
                {"topics": ["a1", "b1"], "data": "both"},
                {"topic": "b1", "data": "two\nlines", "id": "custom-7"},
                {"topic": "other", "data": "not for us"},
            ]
        }
        status, _, response = await server.publish(orjson.dumps(body))
        assert status == 200
        ids = json.loads(response)["ids"]
        assert ids[2] == "custom-7"
        assert int(ids[0]) < int(ids[1]) < int(ids[3])
        events = await collect(client, 3)
        assert [(e.data, e.id) for e in events] == [
            ("one", ids[0]),
            ("both", ids[1]),
            ("two\nlines", "custom-7"),
        ]
        client.close()

    asyncio.run(main())


def test_resume_known_unknown_evicted(server: ServerProcess) -> None:
    async def main() -> None:
        ids = []
        for i in range(5):
            _, _, body = await server.publish(orjson.dumps({"topic": "r", "data": i}))
            ids += json.loads(body)["ids"]
        # known: resume just after ids[1]
        client = server.client("r", last_event_id=ids[1])
        await client.connect()
        assert client.response_headers["sse-fast-resume"] == "resumed"
        events = await collect(client, 3)
        assert [e.data for e in events] == ["2", "3", "4"]
        client.close()
        # the query parameter works like the header
        client = server.client("r", extra_query={"lastEventId": ids[3]})
        await client.connect()
        assert [e.data for e in await collect(client, 1)] == ["4"]
        client.close()
        # unknown id: told explicitly, continues from now
        client = server.client("r", last_event_id="no-such-id")
        await client.connect()
        assert client.response_headers["sse-fast-resume"] == "unknown"
        (missed,) = await collect(client, 1)
        assert missed.event == "sse-fast-missed"
        assert json.loads(missed.data) == {"reason": "unknown", "last_event_id": "no-such-id"}
        await server.publish(b'{"topic":"r","data":"after"}')
        assert [e.data for e in await collect(client, 1)] == ["after"]
        client.close()
        # evicted: the ring keeps 8 frames; push the first ids out
        for i in range(10):
            await server.publish(orjson.dumps({"topic": "r", "data": f"x{i}"}))
        client = server.client("r", last_event_id=ids[0])
        await client.connect()
        assert client.response_headers["sse-fast-resume"] == "evicted"
        (missed,) = await collect(client, 1)
        assert json.loads(missed.data)["reason"] == "evicted"
        # the missed event carries the current position: resuming from it loses nothing
        position = missed.id
        client.close()
        await server.publish(b'{"topic":"r","data":"later"}')
        client = server.client("r", last_event_id=position)
        await client.connect()
        assert client.response_headers["sse-fast-resume"] == "resumed"
        assert [e.data for e in await collect(client, 1)] == ["later"]
        client.close()

    asyncio.run(main())


def test_heartbeat(server: ServerProcess) -> None:
    async def main() -> None:
        client = server.client("quiet", record=True)
        await client.connect()
        deadline = time.monotonic() + 5
        while b": \n\n" not in bytes(client.raw):
            assert time.monotonic() < deadline, "no heartbeat"
            await asyncio.wait_for(client.events(), 5)
        client.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"data": 1}', 400, "topic"),
        (b'{"topic": "a b", "data": 1}', 400, "characters"),
        (b'{"topic": "a", "data": 1, "colour": "red"}', 400, "unknown field"),
        (b'{"topic": "a", "data": 1, "event": "x\\ny"}', 400, "one-line"),
        (b'{"topic": "a", "data": 1, "event": "sse-fast-missed"}', 400, "reserved"),
        (b'{"topic": "a", "data": 1, "id": "a\\u0000"}', 400, "NUL"),
        (b'{"topic": "a", "data": 1, "retry": -5}', 400, "retry"),
        (b'{"events": [{"topic": "a", "data": 1}, {"topic": "a"}]}', 400, "events[1]"),
        (b'{"topic": "a", "data": "\\ud800"}', 400, "not valid JSON"),
        (b"[" * 5000, 400, "not valid JSON"),
    ],
)
def test_malformed_publish_is_refused_and_publishes_nothing(
    server: ServerProcess, body: bytes, status: int, fragment: str
) -> None:
    async def main() -> None:
        before = (await stats(server))["last_id"]
        code, headers, response = await server.publish(body)
        assert code == status
        assert headers["content-type"] == "application/json"
        assert fragment in json.loads(response)["error"]
        assert (await stats(server))["last_id"] == before

    asyncio.run(main())


def test_malformed_requests(server: ServerProcess) -> None:
    async def main() -> None:
        assert (await server.get("/nowhere"))[0] == 404
        assert (await server.get("/publish"))[0] == 405
        code, _, body = await server.publish(
            b'{"topic":"a","data":1}', {"Content-Type": "text/plain"}
        )
        assert code == 415
        code, _, body = await server.publish(b"x" * (1024 * 1024 + 1))
        assert code == 413 and b"max_body_bytes" in body
        for query, fragment in [
            ("", "at least one topic"),
            ("?topic=", "empty"),
            ("?topic=%ff", "characters"),
            ("?" + "&".join(f"topic=t{i}" for i in range(17)), "at most 16"),
        ]:
            code, _, body = await server.get("/events" + query)
            assert code == 400, query
            assert fragment in json.loads(body)["error"], (query, body)
        client = server.client("a", last_event_id="x" * 300)
        with pytest.raises(HTTPResponseError) as info:
            await client.connect()
        assert info.value.status == 400
        metrics = (await server.get("/metrics"))[2].decode()
        assert 'sse_fast_refused_total{reason="bad_topic"}' in metrics

    asyncio.run(main())


def test_ops_endpoints(server: ServerProcess) -> None:
    async def main() -> None:
        assert (await server.get("/healthz"))[0] == 200
        assert (await server.get("/readyz"))[0] == 200
        client = server.client("ops")
        await client.connect()
        await server.publish(b'{"topic":"ops","data":1}')
        await collect(client, 1)
        code, headers, body = await server.get("/metrics")
        text = body.decode()
        assert code == 200 and headers["content-type"].startswith("text/plain")
        for name in (
            "sse_fast_connections_open",
            "sse_fast_connections_total",
            "sse_fast_published_total",
            "sse_fast_delivered_total",
            "sse_fast_lag_disconnects_total",
            'sse_fast_subscribers{topic="ops"} 1',
            "sse_fast_publish_to_write_seconds_bucket",
        ):
            assert name in text, name
        code, _, body = await server.get("/stats?connections=1")
        data = json.loads(body)
        assert data["topics"]["ops"]["subscribers"] == 1
        assert data["eager_send"] is True
        assert data["native_core"] is sse_fast.HAS_EXTENSIONS  # the server's, as the tests'
        assert any(c["topics"] == ["ops"] for c in data["connection_list"])
        client.close()

    asyncio.run(main())


def test_disconnect_cleanup_after_1000_clients_vanish(server: ServerProcess) -> None:
    async def round_trip() -> None:
        clients = [server.client("vanish") for _ in range(1000)]
        try:
            await asyncio.gather(*(c.connect() for c in clients))
            await wait_for(lambda: _connections_at_least(server, 1000), timeout=20)
            await server.publish(b'{"topic":"vanish","data":"hi"}')
        finally:  # a failure here must not leave 1,000 open sockets to the next test
            for client in clients:
                client.abort()
        await wait_for(lambda: _connections_at_most(server, 0), timeout=20)

    async def main() -> None:
        (pid,) = server.worker_pids()
        for _ in range(3):  # warm-up: allocator arenas, topic, caches
            await round_trip()
        baseline = rss_kb(pid)
        for _ in range(4):
            await round_trip()
        grown = rss_kb(pid) - baseline
        # Granian's allocator settles over the first rounds (a minimal ASGI app under
        # Granian shows 1-3 KB per vanished connection early on, then plateaus); a
        # live stream costs ~20 KB. Python-level freeing is proven exactly in test_hub_closing.py.
        assert grown < 4 * 4000, f"worker RSS grew by {grown} KB over 4000 vanished clients"
        data = await stats(server)
        assert data["connections"] == 0
        assert data["topics"]["vanish"]["subscribers"] == 0
        metrics = (await server.get("/metrics"))[2].decode()
        assert "sse_fast_connections_open 0" in metrics

    asyncio.run(main())


async def _connections_at_least(server: ServerProcess, n: int) -> bool:
    return int((await stats(server))["connections"]) >= n


async def _connections_at_most(server: ServerProcess, n: int) -> bool:
    return int((await stats(server))["connections"]) <= n


def test_lag_disconnect_of_a_client_that_stops_reading() -> None:
    with ServerProcess(ring_max_frames=16, ring_max_bytes=1 << 20) as server:

        async def main() -> None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((HOST, server.port))
            sock.sendall(b"GET /events?topic=lag HTTP/1.1\r\nHost: x\r\n\r\n")
            fast = server.client("lag")
            await fast.connect()
            payload = orjson.dumps({"topic": "lag", "data": "y" * 60000})
            received = 0
            for _ in range(200):  # ~12 MB: far beyond socket buffers and the ring
                await server.publish(payload)
                received += len(await collect(fast, 1))
            assert received == 200  # the fast client was not held back
            await wait_for(lambda: _lag_counted(server), timeout=15)
            sock.close()
            fast.close()

        asyncio.run(main())


async def _lag_counted(server: ServerProcess) -> bool:
    text = (await server.get("/metrics"))[2].decode()
    return "sse_fast_lag_disconnects_total 1" in text


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_graceful_drain(stop_signal: int) -> None:
    server = ServerProcess(drain_timeout=5)
    with server:

        async def main() -> list:
            clients = [server.client("drain") for _ in range(50)]
            await asyncio.gather(*(c.connect() for c in clients))
            await server.publish(b'{"topic":"drain","data":1}')
            for c in clients:
                await collect(c, 1)
            start = time.monotonic()
            assert server.proc is not None
            server.proc.send_signal(stop_signal)
            finals = [await collect(c, 1, timeout=10, until=lambda c: c.closed) for c in clients]
            elapsed = time.monotonic() - start
            assert elapsed < 5
            for c in clients:
                c.close()
            return finals

        finals = asyncio.run(main())
        for events in finals:
            assert events and events[-1].event == "sse-fast-disconnect"
            assert json.loads(events[-1].data) == {"reason": "draining"}
            assert 3000 <= events[-1].retry <= 5000
        assert server.proc is not None
        assert server.proc.wait(10) == 0
        assert "draining 50 stream(s)" in server.output()
        assert "streams per worker" in server.output()  # capacity logged at start
        assert "Stopped worker-1" in server.output()
        assert "lifespan shutdown complete" in server.output()


def test_several_workers_every_subscriber_gets_every_publish() -> None:
    with ServerProcess("--workers", "2") as server:

        async def main() -> None:
            clients = [server.client("multi") for _ in range(60)]
            await asyncio.gather(*(c.connect() for c in clients))
            pids = set()
            deadline = time.monotonic() + 10  # which worker accepts is up to the kernel
            while len(pids) < 2 and time.monotonic() < deadline:
                pids.add((await stats(server))["worker_pid"])
            assert len(pids) == 2, "requests should reach both workers"
            ids = []
            for i in range(10):  # publishes land on either worker
                _, _, body = await server.publish(orjson.dumps({"topic": "multi", "data": i}))
                ids += json.loads(body)["ids"]
            assert ids == sorted(ids, key=int)
            for client in clients:
                events = await collect(client, 10)
                assert [e.data for e in events] == [str(i) for i in range(10)]
                assert [e.id for e in events] == ids
            # resume works whichever worker the client reconnects to
            for _ in range(6):
                client = server.client("multi", last_event_id=ids[4])
                await client.connect()
                assert client.response_headers["sse-fast-resume"] == "resumed"
                assert [e.data for e in await collect(client, 5)] == ["5", "6", "7", "8", "9"]
                client.close()
            for client in clients:
                client.close()

        asyncio.run(main())
        assert server.stop() == 0


async def _raw_stream(server: ServerProcess, request: bytes, until: bytes) -> bytes:
    """Send raw request bytes (as curl or a browser would); read until ``until``."""
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(request)
        data = b""
        while until not in data:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        writer.close()


def test_last_event_id_header_is_utf8(server: ServerProcess) -> None:
    """Browsers, curl, requests, httpx and aiohttp send Last-Event-ID as UTF-8."""

    async def main() -> None:
        await server.publish('{"topic":"utf8","data":"a","id":"café-2"}'.encode())
        await server.publish(b'{"topic":"utf8","data":"after"}')
        request = "GET /events?topic=utf8 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: café-2\r\n\r\n"
        data = await _raw_stream(server, request.encode("utf-8"), b"data: after\n")
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"sse-fast-resume: resumed" in head
        assert b"data: after\n" in data
        # the library's own client sends it the same way
        client = server.client("utf8", last_event_id="café-2")
        await client.connect()
        assert client.response_headers["sse-fast-resume"] == "resumed"
        assert [e.data for e in await collect(client, 1)] == ["after"]
        client.close()

    asyncio.run(main())


def test_undecodable_last_event_id_is_unknown_not_an_error(server: ServerProcess) -> None:
    async def main() -> None:
        request = b"GET /events?topic=utf8b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: caf\xe9\r\n\r\n"
        data = await _raw_stream(server, request, b"sse-fast-missed")
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"sse-fast-resume: unknown" in head.lower()
        assert b'"reason":"unknown","last_event_id":"caf?"' in body

    asyncio.run(main())


def test_deep_json_gets_the_same_answer_with_several_workers(server: ServerProcess) -> None:
    """Data nested 252-1,023 deep: one worker and two give the same answer (200 up
    to orjson's limit, then 400 with the encoder's reason); nothing is published
    and no relay request is left pending."""
    depths = [252, 254, 255, 256, 1023]

    async def answers(target: ServerProcess) -> list[tuple[int, bytes]]:
        out = []
        for depth in depths:
            data = "[" * depth + "]" * depth
            body = ('{"topic":"deep","data":' + data + "}").encode()
            status, _, response = await target.publish(body)
            out.append((status, b"" if status == 200 else response))
        return out

    with ServerProcess("--workers", "2") as several:

        async def main() -> None:
            client = several.client("deep")
            await client.connect()
            one = await answers(server)
            two = await answers(several)
            assert two == one
            assert [status for status, _ in two] == [200, 200, 400, 400, 400]
            assert b"cannot serialise list as JSON: Recursion limit reached" in two[2][1]
            events = await collect(client, 2)
            assert [e.data.count("[") for e in events] == [252, 254]
            status, _, _ = await several.publish(b'{"topic":"deep","data":"after"}')
            assert status == 200
            assert [e.data for e in await collect(client, 1)] == ["after"]
            # both workers: no publish left waiting for the relay
            stats = json.loads((await several.get("/stats"))[2])
            assert len(stats["workers"]) == 2
            for worker in stats["workers"]:
                assert worker["relay"]["connected"] and worker["relay"]["pending"] == 0
            client.close()

        asyncio.run(main())
