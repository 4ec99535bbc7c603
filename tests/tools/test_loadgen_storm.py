"""A restart storm loses nothing (issue 44, item 2, at a count the default suite can run;
``benches/streams_100k.py`` runs it with 100,000 streams): a real ``sse-fast serve`` of
two workers restarted by SIGTERM under a broadcast, and ``sse_fast.loadgen``'s clients
reconnecting as browsers do, after the ``retry`` the drain sent them (spread at random
by ``drain_retry_jitter_ms``), with ``Last-Event-ID``, again while the server is away.
Real processes: a reconnect storm on a real server restarted."""

from __future__ import annotations

from pathlib import Path

import pytest

from sse_fast.loadgen import run_load
from sse_fast.testing import ServerProcess

pytestmark = [
    pytest.mark.xdist_group("restart"),
    pytest.mark.processes("a reconnect storm on a real server restarted"),
]

STREAMS = 2000


@pytest.mark.timeout(180)
def test_every_stream_comes_back_after_a_restart_with_nothing_lost_or_repeated(
    tmp_path: Path,
) -> None:
    server = ServerProcess(
        "--workers",
        "2",
        data_dir=str(tmp_path / "data"),  # the history outlives the restart
        retry_ms="300",
        drain_retry_jitter_ms="1500",
    )
    with server:

        def restart() -> None:
            server.stop()  # SIGTERM: the drain ends every stream with a jittered retry
            assert server.proc is not None and server.proc.returncode == 0
            server.__enter__()  # the same port and data directory

        result = run_load(
            host="127.0.0.1",
            port=server.port,
            connections=STREAMS,
            rate=10,
            # room after the restart on a busy machine: a stream that reaches the new
            # server while it starts is told to come back after 2-3.5 s (a 200, not 503)
            duration=20,
            warmup=1,
            processes=2,
            sources=2,
            probe=False,
            reconnect_on_close=True,
            fault=restart,
            fault_after=1.0,
        )
    assert result.connected == STREAMS and result.connect_errors == 0
    # each stream ended by the drain, and again each time it came back to a server still
    # draining or starting, which tells it when to come back (a 200 that ends at once)
    assert result.closed_by_server >= STREAMS
    assert result.reconnected_on_close == STREAMS
    assert result.published >= 60  # before and after (refused while away: not counted)
    assert result.publish_errors > 0  # some were refused while it was away
    assert result.expected == result.published * STREAMS
    assert result.lost == 0 and result.duplicates == 0, result.publish_failures
    # a publish whose answer was lost in the restart is neither expected nor lost
    unanswered = result.publish_unanswered * STREAMS
    assert result.expected <= result.delivered <= result.expected + unanswered
    assert result.fault_began is not None and result.reconnected_on_close_last
    assert 0 < result.reconnected_on_close_last - result.fault_began < 60
