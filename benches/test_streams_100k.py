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
        "back_after_s": 31.25,
        "reconnect_errors": 12,
        "published": 55,
        "lost": 0,
        "duplicates": 0,
        "peak_rss_mb": 2048.0,
    }
    return {
        "machine": {"cpu": "test"},
        "conditions": {"streams": 100_000, "workers": 6, "processes": 12, "sources": 13},
        "results": {
            "sse_fast": {
                "broadcast": {"connected": 100_000, "p99_ms": 812.4, "rss_per_connection_kb": 13.9},
                "idle": {"connected": 100_000, "server_cores_used": 0.0421},
                "saturated": {"error": "TimeoutError: boom"},
                "storm": storm,
            },
            "nchan": {"broadcast": {"connected": 99_000, "p99_ms": 10_001.0}},
        },
    }


def test_the_report_puts_the_targets_side_by_side() -> None:
    text = S.report(_canned())
    assert "| | sse_fast | nchan |" in text
    assert "| streams open | 100,000 | 99,000 |" in text
    assert "| p99 latency (ms) | 812 | 10,001 |" in text
    assert "| RSS per stream (KB) | 13.90 | - |" in text
    assert "| server cores | 0.042 | - |" in text
    assert "| streams open | failed | - |" in text  # saturated: the sse_fast part failed
    assert "| seconds from SIGTERM to the last one back | 31.2 | - |" in text
    assert "| streams back | 99,990 | - |" in text
    assert "- sse_fast saturated: TimeoutError: boom" in text


def test_the_restartable_target_keeps_its_data_dir(tmp_path: Path) -> None:
    target = S.RestartableSseFast("sse_fast", "127.0.0.1", 1, data_dir=tmp_path / "kept")
    argv, _, _ = target.command(tmp_path / "work")
    assert argv[argv.index("--data-dir") + 1] == str(tmp_path / "kept")
