"""The pure parts of ``benches/streams_100k.py``: the report from a canned run, the
restartable target's data directory::

    python -m pytest -n 0 benches/test_streams_100k.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benches import streams_100k as S


def _canned() -> dict[str, Any]:
    storm = {
        "connected": 100_000,
        "closed_by_server": 100_000,
        "reconnected_on_close": 99_990,
        "connected_at_end": 99_995,
        "back_after_s": 31.25,
        "server_all_back_after_s": 24.5,
        "client_lag_max_ms": 6_543.2,
        "reconnect_errors": 12,
        "published": 55,
        "lost": 0,
        "duplicates": 0,
        "peak_rss_mb": 2048.0,
        "old_gone_after_s": 7.95,
        "new_ready_after_s": 8.91,
    }
    return {
        "machine": {"cpu": "test"},
        "conditions": {"streams": 100_000, "workers": 6, "processes": 12, "sources": 13},
        "results": {
            "sse_fast": {
                "broadcast": {
                    "connected": 100_000,
                    "p99_ms": 812.4,
                    "rss_per_connection_kb": 13.9,
                    "rss_per_stream_broadcast_kb": 14.25,
                },
                "idle": {"connected": 100_000, "server_cores_used": 0.0421},
                "saturated": {"error": "TimeoutError: boom"},
                "storm": storm,
                "storm_5s": {
                    **storm,
                    "connected_at_end": 100_000,
                    "failures_in_run": {"refused": 7},
                },
            },
            "nchan": {
                "broadcast": {
                    "connected": 99_000,
                    "p99_ms": 10_001.0,
                    "rss_per_stream_broadcast_kb": 21.57,
                }
            },
        },
    }


def test_the_report_puts_the_targets_side_by_side() -> None:
    text = S.report(_canned())
    assert "| | sse_fast | nchan |" in text
    assert "| streams open | 100,000 | 99,000 |" in text
    assert "| p99 latency (ms) | 812 | 10,001 |" in text
    assert "| RSS per stream, all open before the first event (KB) | 13.90 | - |" in text
    assert "| RSS per stream, peak while the events go out (KB) | 14.25 | 21.57 |" in text
    assert "| seconds from SIGTERM until the old server was gone | 8.0 | - |" in text
    assert "| ... until the new one answered | 8.9 | - |" in text
    assert "| server cores | 0.042 | - |" in text
    assert "| streams open | failed | - |" in text  # saturated: the sse_fast part failed
    assert "| seconds from SIGTERM to the last one back (clients) | 31.2 | - |" in text
    assert "| streams counted back | 99,990 | - |" in text
    assert "| streams back (open at the window's end) | 99,995 | - |" in text
    assert "until the server held them all (kernel count) | 24.5 | - |" in text
    assert "their own times are late by up to | 6,543 | - |" in text
    assert "- sse_fast saturated: TimeoutError: boom" in text
    # the restart under the first part's load, its own table after the 1/s one
    calm = text.split("## The same restart under a broadcast every 5 s")[1]
    assert "| streams back (open at the window's end) | 100,000 | - |" in calm
    assert "sse_fast's failed connects in storm_5s: 7 x refused." in calm


def test_an_unknown_part_is_refused() -> None:
    import pytest

    with pytest.raises(SystemExit):
        S.main(["--parts", "storm,strom"])


def test_the_restartable_target_keeps_its_data_dir(tmp_path: Path) -> None:
    target = S.RestartableSseFast("sse_fast", "127.0.0.1", 1, data_dir=tmp_path / "kept")
    argv, _, _ = target.command(tmp_path / "work")
    assert argv[argv.index("--data-dir") + 1] == str(tmp_path / "kept")


def test_the_kernel_count_finds_when_the_server_held_all_again() -> None:
    """After the restart's drop, the first sample at the full count; None if never."""
    peak = S.Peak.__new__(S.Peak)
    peak.counts = [(9.0, 100), (10.5, 100), (11.0, 3), (12.0, 60), (13.0, 100), (14.0, 100)]
    assert peak.all_back_after(10.0, 100) == 3.0
    peak.counts = [(11.0, 3), (12.0, 99)]
    assert peak.all_back_after(10.0, 100) is None
    # the publisher's connection counted before the restart: all back means it too
    peak.counts = [(9.0, 101), (11.0, 3), (12.0, 100), (13.0, 101)]
    assert peak.all_back_after(10.0, 100) == 3.0


def test_the_established_count_reads_a_listening_port() -> None:
    """``established`` counts the server's side of connections to a port, not the
    listener or the clients' side."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [server.accept()[0] for _ in clients]
        try:
            assert S.established(port) == 3
        finally:
            for sock in clients + accepted:
                sock.close()
