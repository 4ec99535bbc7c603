"""The kernel memory a client that never reads can pin is bounded
(``stream_send_buffer``, ``sse_fast/_granian/_listener.py``), against a real ``sse-fast serve``,
read from the server's sockets with ``ss``. Loopback only, bounded in time.

Without the bound Linux autotunes each connection's send buffer up to
``net.ipv4.tcp_wmem``'s maximum (4 MiB by default): 500 never-reading clients
pinned about 1.5 GiB of kernel memory while the worker's RSS stayed at 170 MB.
Real processes: the kernel's send buffers of a real server's sockets.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from sse_fast.settings import Settings
from sse_fast.testing import HOST, ServerProcess, parse_ss, tcp_sockets, wait_for

from ..support.waiting import until

pytestmark = [
    pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)"),
    pytest.mark.processes("the kernel's send buffers of a real server's sockets"),
]

KiB = 1024
EVENT = 256 * KiB
#: the most the kernel's autotuning gives one socket's send buffer here
AUTOTUNED_MAX = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
#: enough to fill an autotuned send buffer, the client's receive buffer and Granian's
#: channel, so a send buffer that is not bounded shows it
FLOOD = AUTOTUNED_MAX + 4 * 1024 * KiB
#: what the kernel may queue past the buffer: the write that found room (one skb)
SLACK = 64 * KiB


def _server(**settings: Any) -> ServerProcess:
    return ServerProcess(
        heartbeat_interval=0,
        persistence="off",
        ring_max_bytes=64 * 1024 * KiB,
        catch_up_timeout=settings.pop("catch_up_timeout", 0),
        **settings,
    )


def _never_reader(port: int) -> socket.socket:
    """Subscribes, then never reads (the default receive buffer, as the probe's)."""
    sock = socket.create_connection((HOST, port))
    sock.sendall(b"GET /events?topic=stuck HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def _flood(server: ServerProcess, size: int) -> None:
    async def publish() -> None:
        for index in range(size // EVENT):
            body = orjson.dumps({"topic": "stuck", "data": f"{index:08d}" + "x" * (EVENT - 16)})
            status, _, answer = await server.publish(body)
            assert status == 200, answer

    asyncio.run(publish())


def _server_side(server: ServerProcess, client: socket.socket) -> dict[str, int]:
    """The memory of the server's socket of ``client``'s connection."""
    port = client.getsockname()[1]
    (sock,) = [s for s in tcp_sockets(server.port) if s["peer_port"] == port]
    return sock


def _settled(server: ServerProcess, client: socket.socket, timeout: float = 20) -> dict[str, int]:
    """The server's socket once the client's window is closed: nothing leaves its send
    queue any more, what the flood put there stays (``ss -o`` shows the kernel probing
    the zero window: its persist timer). The kernel holds the queue within the buffer
    it has (``tb``) whenever it is looked at; this is when the flood has reached it."""
    connection = f"( sport = :{server.port} and dport = :{client.getsockname()[1]} )"

    def closed() -> dict[str, int] | None:
        text = subprocess.run(
            ["ss", "-tmonH", "state", "established", connection],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        (sock,) = parse_ss(text)
        return sock if "timer:(persist" in text else None

    return until(closed, timeout, "the client's window closed (ss -o: timer persist)")


@pytest.mark.parametrize("size", [None, 32 * KiB], ids=["default", "32KiB"])
def test_a_never_reading_client_pins_at_most_its_send_buffer(size: int | None) -> None:
    bound = Settings().stream_send_buffer if size is None else size
    assert bound > 0
    settings = {} if size is None else {"stream_send_buffer": size}
    with _server(**settings) as server:
        client = _never_reader(server.port)
        _flood(server, FLOOD)
        sock = _settled(server, client)
        assert sock["tb"] == 2 * bound  # the kernel doubles SO_SNDBUF, and autotunes no more
        assert 0 < sock["w"] <= sock["tb"] + SLACK
        client.close()


def test_zero_leaves_the_send_buffer_to_the_kernels_autotuning() -> None:
    with _server(stream_send_buffer=0) as server:
        client = _never_reader(server.port)
        _flood(server, FLOOD)
        _settled(server, client)

        def grown() -> bool:
            sock = _server_side(server, client)
            return sock["tb"] > 2 * 256 * KiB and sock["w"] > 2 * 256 * KiB

        # what the bound stops: the queue grows past any of the sizes measured
        until(grown, 20, "the send queue grows past 512 KiB")
        client.close()


def test_a_never_reader_is_cut_before_the_kernel_holds_megabytes() -> None:
    """The bound makes the stall visible sooner: 3 MiB (less than an autotuned buffer
    takes) block the write, and the stalled client is cut after ``catch_up_timeout``.
    Bounded, about 1.8 MiB of it is taken: 256 KiB by the two ends' kernel buffers,
    about 6 events of 256 KiB by Granian's channel and our pending write."""
    with _server(stream_send_buffer=64 * KiB, catch_up_timeout=1) as server:
        client = _never_reader(server.port)
        _flood(server, 3 * 1024 * KiB)

        async def cut() -> bool:
            text = (await server.get("/metrics"))[2].decode()
            return "sse_fast_stall_disconnects_total 1" in text.splitlines()

        asyncio.run(wait_for(cut, timeout=15))
        asyncio.run(wait_for(_gone(server), timeout=5))
        client.close()


def _gone(server: ServerProcess) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not tcp_sockets(server.port)

    return check


def _listeners(port: int) -> list[tuple[int, int]]:
    """(owner pid, send buffer) of each listening socket on ``port``."""
    out = subprocess.run(
        ["ss", "-tlmnpH", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return [
        (int(pid), int(tb))
        for pid, tb in re.findall(r"pid=(\d+),fd=\d+\)\)\s+skmem:\([^)]*tb(\d+)", out)
    ]


def test_each_worker_listens_alone_with_the_bound_a_respawned_one_too() -> None:
    bound = 48 * KiB
    with _server(stream_send_buffer=bound, workers=2) as server:
        assert server.proc is not None
        listeners = _listeners(server.port)
        assert len(listeners) == 2  # one per worker, as Granian's own (SO_REUSEPORT)
        owners = {pid for pid, _ in listeners}
        assert len(owners) == 2 and server.proc.pid not in owners
        assert owners <= set(server.worker_pids())
        assert all(tb == 2 * bound for _, tb in listeners)
        killed = min(owners)
        os.kill(killed, signal.SIGKILL)

        async def respawned() -> bool:
            now = _listeners(server.port)
            return len(now) == 2 and killed not in {pid for pid, _ in now}

        asyncio.run(wait_for(respawned, timeout=20))
        assert all(tb == 2 * bound for _, tb in _listeners(server.port))
        # the main process holds no listener: a worker that exits takes its own along
        assert server.proc.pid not in {pid for pid, _ in _listeners(server.port)}
