"""Clients the server ends are really cut: their sockets are gone, not just
forgotten (lag, stalled writes, drain), against a real ``sse-fast serve``.

A client that never reads cannot receive the final ``sse-fast-disconnect``
frame; without a cut its TCP connection stayed ESTABLISHED with megabytes
unsent while the server had already released its per-IP slot.
Real processes: a real server, whose kernel buffers fill.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import orjson
import pytest

from sse_fast.testing import HOST, ServerProcess, collect, wait_for

NON_READERS = 20
BIG_EVENT = orjson.dumps({"topic": "cut", "data": "x" * 64 * 1024})


pytestmark = pytest.mark.processes("the kernel's socket buffers of real clients that stop reading")


def non_reader(port: int, topic: str = "cut") -> socket.socket:
    """Subscribes, then never reads (a tiny receive buffer fills at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, port))
    sock.sendall(f"GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def established(port: int) -> int:
    """Server-side TCP connections of ``port`` in state ESTABLISHED."""
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(out.splitlines())


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def was_reset(sock: socket.socket) -> bool:
    """True when the server reset the connection (what a cut looks like)."""
    sock.setblocking(False)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False
    return False


async def metric(server: ServerProcess, name: str) -> int:
    text = (await server.get("/metrics"))[2].decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not in /metrics")


async def publish_until(server: ServerProcess, check: str, count: int, rate: float) -> None:
    """Publish 64 KB events at ``rate``/s until metric ``check`` reaches ``count``."""
    deadline = time.monotonic() + 30
    while await metric(server, check) < count:
        assert time.monotonic() < deadline, f"{check} never reached {count}"
        status, _, body = await server.publish(BIG_EVENT)
        assert status == 200, (body, server.output()[-3000:])  # the refusal says why
        await asyncio.sleep(1 / rate)  # pace: the load, ``rate`` big events a second


def test_lagging_non_readers_are_cut_and_their_slots_are_not_reused_early() -> None:
    """The reviewer's case: 20 never-reading clients, 20 publishes/s of 64 KB."""
    catch_up_timeout = 2.0
    with ServerProcess(
        ring_max_frames=16,
        ring_max_bytes=1 << 20,
        catch_up_timeout=catch_up_timeout,
        max_connections_per_ip=NON_READERS + 1,
    ) as server:
        (worker,) = server.worker_pids()

        async def main() -> None:
            fast = server.client("cut")
            await fast.connect()
            baseline_fds = open_fds(worker)
            sockets = [non_reader(server.port) for _ in range(NON_READERS)]
            await wait_for(lambda: _connections(server, NON_READERS + 1))
            reader = asyncio.ensure_future(collect(fast, 10**6, timeout=60))
            await publish_until(server, "sse_fast_lag_disconnects_total", NON_READERS, rate=20)
            lagged_at = time.monotonic()
            await wait_for(
                lambda: _true(established(server.port) <= 1), timeout=catch_up_timeout + 1.5
            )
            assert time.monotonic() - lagged_at <= catch_up_timeout + 1.5
            assert await metric(server, "sse_fast_connections_cut_total") == NON_READERS
            assert all(was_reset(s) for s in sockets)
            await wait_for(lambda: _true(open_fds(worker) <= baseline_fds + 1), timeout=2)
            # the per-IP slots came back only with the sockets: 20 new streams fit,
            # and the server holds exactly the streams it counts
            others = [server.client("cut") for _ in range(NON_READERS)]
            await asyncio.gather(*(c.connect() for c in others))
            assert established(server.port) == NON_READERS + 1
            assert not fast.closed
            reader.cancel()
            for c in (fast, *others):
                c.close()
            for s in sockets:
                s.close()

        asyncio.run(main())


def test_stalled_non_readers_are_cut_within_catch_up_timeout() -> None:
    """History large enough that nobody lags: the blocked write times out."""
    catch_up_timeout = 1.0
    with ServerProcess(
        ring_max_bytes=256 << 20, catch_up_timeout=catch_up_timeout, heartbeat_interval=0
    ) as server:
        (worker,) = server.worker_pids()

        async def main() -> None:
            baseline_fds = open_fds(worker)
            sockets = [non_reader(server.port) for _ in range(NON_READERS)]
            await wait_for(lambda: _connections(server, NON_READERS))
            await publish_until(server, "sse_fast_stall_disconnects_total", NON_READERS, rate=50)
            stalled_at = time.monotonic()
            await wait_for(lambda: _true(established(server.port) == 0), timeout=2)
            assert time.monotonic() - stalled_at <= catch_up_timeout + 1
            assert await metric(server, "sse_fast_lag_disconnects_total") == 0
            assert await metric(server, "sse_fast_connections_cut_total") == NON_READERS
            assert all(was_reset(s) for s in sockets)
            await wait_for(lambda: _true(open_fds(worker) <= baseline_fds), timeout=2)
            for s in sockets:
                s.close()

        asyncio.run(main())


UVICORN = [
    sys.executable,
    "-m",
    "uvicorn",
    "sse_fast.app:create_app",
    "--factory",
    "--port",
    "{port}",
    "--no-access-log",
]


def test_stalled_non_readers_are_cut_under_uvicorn() -> None:
    """The cut does not depend on Granian: uvicorn (lazy ``send``) too."""
    with ServerProcess(
        command=UVICORN, ring_max_bytes=256 << 20, catch_up_timeout=1.0, heartbeat_interval=0
    ) as server:
        (worker,) = [server.proc.pid] if server.proc else []

        async def main() -> None:
            baseline_fds = open_fds(worker)
            reader = server.client("cut")
            await reader.connect()
            sockets = [non_reader(server.port) for _ in range(NON_READERS)]
            await wait_for(lambda: _connections(server, NON_READERS + 1))
            reading = asyncio.ensure_future(collect(reader, 10**6, timeout=60))
            await publish_until(server, "sse_fast_stall_disconnects_total", NON_READERS, rate=50)
            await wait_for(lambda: _true(established(server.port) <= 1), timeout=2)
            assert await metric(server, "sse_fast_connections_cut_total") == NON_READERS
            assert all(was_reset(s) for s in sockets)
            await wait_for(lambda: _true(open_fds(worker) <= baseline_fds + 1), timeout=2)
            assert not reader.closed
            reading.cancel()
            reader.close()
            for s in sockets:
                s.close()

        asyncio.run(main())


def test_drain_keeps_its_bound_with_non_readers_open() -> None:
    """SIGTERM with 20 non-readers (writes blocked) exits within drain_timeout + 1 s."""
    drain_timeout = 1.0
    server = ServerProcess(
        drain_timeout=drain_timeout, ring_max_bytes=256 << 20, catch_up_timeout=60
    )
    with server:

        async def main() -> None:
            readers = [server.client("cut") for _ in range(5)]
            await asyncio.gather(*(c.connect() for c in readers))
            sockets = [non_reader(server.port) for _ in range(NON_READERS)]
            await wait_for(lambda: _connections(server, NON_READERS + 5))
            for _ in range(80):  # ~5 MB each: far more than a non-reader's buffers
                status, _, _ = await server.publish(BIG_EVENT)
                assert status == 200
            for c in readers:
                await collect(c, 80, timeout=20)
            stats = json.loads((await server.get("/stats?connections=1"))[2])
            states = [c["state"] for c in stats["connection_list"]]
            assert states.count("catching-up") == NON_READERS  # their writes are blocked
            assert server.proc is not None
            start = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            finals = [await collect(c, 1, timeout=10, until=lambda c: c.closed) for c in readers]
            server.proc.wait(drain_timeout + 5)
            elapsed = time.monotonic() - start
            assert elapsed <= drain_timeout + 1, f"drain took {elapsed:.2f} s"
            assert server.proc.returncode == 0
            for events in finals:
                assert events[-1].event == "sse-fast-disconnect"
            assert all(was_reset(s) for s in sockets)
            for c in readers:
                c.close()
            for s in sockets:
                s.close()

        asyncio.run(main())
        assert "lifespan shutdown complete" in server.output()


async def _true(value: bool) -> bool:
    return value


async def _connections(server: ServerProcess, n: int) -> bool:
    return int(json.loads((await server.get("/stats"))[2])["connections"]) >= n
