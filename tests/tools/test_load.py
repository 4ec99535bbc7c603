"""Slow load tests (``python -m pytest -m slow``): real connection counts on loopback,
bounded in time. They check behaviour (everything delivered, nothing lost); the
figures themselves come from ``python -m benches.server_bench``. Real processes: a
server's workers and the load generator's client processes, on real sockets."""

from __future__ import annotations

import pytest

from sse_fast.loadgen import run_load
from sse_fast.loadgen._procfs import process_tree
from sse_fast.testing import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.processes("thousands of real sockets between a server's workers and loadgen"),
]


@pytest.mark.timeout(600)
def test_25000_subscribers_across_two_workers_receive_everything() -> None:
    with ServerProcess("--workers", "2") as server:
        assert server.proc is not None
        root = server.proc.pid
        result = run_load(
            host="127.0.0.1",
            port=server.port,
            name="sse_fast-2w",
            connections=25_000,
            rate=2,
            duration=10,
            warmup=2,
            processes=3,
            server_pids=lambda: process_tree(root),
        )
    assert result.connected == 25_000 and result.connect_errors == 0
    assert result.lost == 0 and result.duplicates == 0
    assert result.delivered == result.expected > 0
    assert result.closed_by_server == 0


@pytest.mark.timeout(600)
def test_concurrent_publishers_every_event_once_in_order() -> None:
    with ServerProcess("--ring-max-frames", "4096") as server:
        result = run_load(
            host="127.0.0.1",
            port=server.port,
            name="sse_fast-1w",
            connections=3000,
            rate=20,
            publishers=4,
            duration=8,
            warmup=2,
        )
    assert result.connected == 3000
    assert result.lost == 0 and result.duplicates == 0
    assert result.delivered == result.expected
