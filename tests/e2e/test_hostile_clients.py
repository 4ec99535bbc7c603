"""Clients that hold what they should not, against a real ``sse-fast serve``: a
publish body that never finishes, a request head sent halfway, a publisher filling
the memory with history. Loopback only, bounded in time. Real processes: a real server,
whose CPU time and sockets are the figures."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import orjson
import pytest

from sse_fast.testing import HOST, ServerProcess, collect, rss_kb

MiB = 1 << 20
STUCK_BODY = (
    b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 1000\r\n\r\n{"top'
)
STUCK_CHUNKED = (
    b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"top\r\n'
)
HALF_HEAD = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Ty"


pytestmark = pytest.mark.processes("a real server's CPU and sockets under hostile clients")


def _open(server: ServerProcess, head: bytes) -> socket.socket:
    sock = socket.create_connection((HOST, server.port))
    sock.sendall(head)
    return sock


def _answer(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server wrote, and whether it then closed the connection."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    return data, True


def test_a_body_that_never_finishes_gets_408_and_its_connection_closed() -> None:
    with ServerProcess(body_timeout=1) as server:
        sockets = [_open(server, STUCK_BODY), _open(server, STUCK_CHUNKED)]
        start = time.monotonic()
        for sock in sockets:
            data, closed = _answer(sock, 5)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), data
            assert "within 1 s (body_timeout)" in json.loads(body)["error"]
            assert closed  # the connection is not held either
            sock.close()
        assert time.monotonic() - start < 3
        # the server goes on; the refusals are counted
        status, _, _ = asyncio.run(server.publish(orjson.dumps({"topic": "t", "data": 1})))
        assert status == 200
        metrics = asyncio.run(server.get("/metrics"))[2].decode()
        assert 'sse_fast_refused_total{reason="body_timeout"} 2' in metrics


def test_sigterm_ends_within_drain_timeout_with_requests_stuck_halfway() -> None:
    """Defaults: drain_timeout 5 s, body_timeout 10 s, header_timeout 5 s."""
    with ServerProcess() as server:
        stuck = [_open(server, STUCK_BODY), _open(server, STUCK_CHUNKED)]
        half_head = _open(server, HALF_HEAD)

        async def a_stream_too() -> list[object]:
            client = server.client("news")
            await client.connect()
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            return await collect(client, 10, timeout=10, until=lambda c: c.closed)

        start = time.monotonic()
        events = asyncio.run(a_stream_too())
        assert server.proc is not None
        server.proc.wait(15)
        elapsed = time.monotonic() - start
        assert elapsed <= 5 + 2, f"the shutdown took {elapsed:.1f} s"
        assert server.proc.returncode == 0
        assert events and events[-1].event == "sse-fast-disconnect"  # type: ignore[attr-defined]
        for sock in stuck:
            data, closed = _answer(sock, 1)
            assert data.startswith(b"HTTP/1.1 503"), data
            assert "drain_timeout" in json.loads(data.partition(b"\r\n\r\n")[2])["error"]
            assert closed
            sock.close()
        half_head.close()
        assert "lifespan shutdown complete" in server.output()


def test_the_history_budget_bounds_the_memory_publishers_can_fill() -> None:
    """300 publishes of 1 MB to new topics under a 64 MiB budget: the worker's
    resident memory stays within the budget plus a fixed overhead; what went is
    told ``evicted``, and counted."""
    budget = 64 * MiB
    with ServerProcess(max_history_bytes=budget, max_body_bytes=2 * MiB) as server:
        (worker,) = server.worker_pids()

        async def main() -> None:
            status, _, body = await server.publish(orjson.dumps({"topic": "before", "data": 0}))
            seen_before = orjson.loads(body)["ids"][0]  # what a subscriber had seen
            data = "x" * 1_000_000
            for i in range(300):
                status, _, body = await server.publish(
                    orjson.dumps({"topic": f"user/{i}/inbox", "data": data})
                )
                assert status == 200, body
            stats = json.loads((await server.get("/stats?limit=1"))[2])
            assert stats["history_bytes"] <= budget == stats["history_budget_bytes"]
            assert stats["history_budget_evicted"] >= 300 - budget // 1_000_000
            assert stats["topics_with_history"] <= budget // 1_000_000
            # a subscriber resuming into the evicted history is told so, not left silent
            client = server.client("user/0/inbox", last_event_id=seen_before)
            await client.connect()
            assert client.response_headers.get("sse-fast-resume") == "evicted"
            (missed,) = await collect(client, 1, timeout=5)
            assert missed.event == "sse-fast-missed"
            client.close()
            metrics = (await server.get("/metrics"))[2].decode()
            assert 'sse_fast_worker_history_budget_evicted_total{worker="0"}' in metrics

        before = rss_kb(worker)
        asyncio.run(main())
        after = rss_kb(worker)
        grown = (after - before) * 1024
        # the budget, and a fixed overhead: the request buffers and the allocator's own
        assert grown <= budget + 48 * MiB, f"grew {grown / MiB:.0f} MiB"


def test_a_client_silent_past_header_timeout_after_its_handshake_still_gets_its_stream() -> None:
    """The listeners defer accept until a connection's first bytes (``_granian/_listener.py``):
    Granian counts ``header_timeout`` from the accept, so a client slow to write after
    its handshake (a reconnect storm's, starved of CPU) is not closed unanswered; one
    that sends nothing at all is still closed, ``header_timeout`` after the kernel
    hands it over. Without the deferral the first socket is closed at 2 s."""
    with ServerProcess(header_timeout=2, persistence="off") as server:
        slow = socket.create_connection((HOST, server.port))
        silent = socket.create_connection((HOST, server.port))
        # pace: a client silent past header_timeout (2 s); the kernel still holds both
        time.sleep(3.5)
        slow.sendall(b"GET /events?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = _answer(slow, 2)
        assert data.startswith(b"HTTP/1.1 200"), data
        assert not closed
        slow.close()
        # handed over after about 3 s (2 s rounded up to the SYN-ACK retransmissions),
        # then closed by Granian header_timeout later, having sent nothing
        data, closed = _answer(silent, 10)
        assert (data, closed) == (b"", True)
        silent.close()


#: the outside probe's pattern (length and wildcards within the defaults), made
#: distinct per request so no cache can answer it
def _probe(index: int) -> str:
    return f"user/r{index}-0/*?" + "x" * 178 + "*?"


def test_hostile_patterns_cost_a_worker_a_bounded_amount_of_cpu() -> None:
    """Anonymous requests for patterns built to be hard to check against the private
    patterns (the outside probe's: 60 ms of a worker's CPU each with one private
    pattern, 420 ms for eight in one request, before the fix) are refused with 401
    at bounded cost: 100 requests of eight distinct patterns each take the server's
    processes under 2 s of CPU in all (under 20 ms a request: the fix's admission
    costs under 1 ms, benches/admission.py; the rest is HTTP), and an unrelated
    stream still gets its events. What the real process proves: the refusal's cost
    is the worker's, measured from /proc, with Granian's parsing and the query's size."""
    from sse_fast.loadgen._procfs import cpu_seconds, process_tree

    with ServerProcess(private_topics="user/*/inbox,org/*/team/*/secret") as server:

        async def main() -> None:
            pids = process_tree(server.proc.pid)  # type: ignore[union-attr]
            good = server.client("news")
            await good.connect()
            before = cpu_seconds(pids)
            for request in range(100):
                query = "&".join(f"topic={_probe(request * 8 + k)}" for k in range(8))
                status, _, body = await server.get(f"/events?{query.replace('?', '%3F')}")
                assert status == 401, body
                assert b"can reach" in body
            spent = cpu_seconds(pids) - before
            assert spent < 2.0, f"{spent:.2f} s of CPU for 100 hostile requests"
            await server.publish(orjson.dumps({"topic": "news", "data": 1}))
            events = await collect(good, 1, timeout=10)
            assert [e.data for e in events] == ["1"]
            good.close()

        asyncio.run(main())
