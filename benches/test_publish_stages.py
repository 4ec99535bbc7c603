"""The pure parts of ``benches/publish_stages.py``: the report from a canned run
(stage costs, ratios, CPU per request by thread) and the per-thread CPU reading of
this very process. Fast, no server; run explicitly (the default test run's
``testpaths = ["tests"]``)::

    python -m pytest -n 0 benches/test_publish_stages.py
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benches import peers
from benches import publish_stages as P
from benches.peers import thread_cpu


def _row(rate: float, loop: float = 1.0, io: float = 2.0) -> dict[str, Any]:
    return {
        "requests_per_s": rate,
        "errors": 0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "cpu_s": {"loop": loop, "io": io, "other": 0.5},
    }


def _report() -> dict[str, Any]:
    rates = {
        "bare": 20_000,
        "bare-cl": 25_000,
        "read": 25_000,
        "parse": 20_000,
        "sequence": 16_000,
        "apply": 12_500,
        "hub": 10_000,
        "full": 8_000,
        "sse_fast": 8_000,
        "rsgi-read": 30_000,
        "rsgi-hub": 12_000,
    }
    return {
        "date": "2026-11-25 12:00",
        "machine": {"cores": 2, "cpu": "test", "python": "3.11"},
        "params": {"rounds": 1, "seconds": 2.0, "users": 10_000, "connections": 16},
        "versions": {"granian": "2.8.7"},
        "results": {
            name: [_row(rate, io=0.0 if name.startswith("rsgi") else 2.0)]
            for name, rate in rates.items()
        },
    }


def test_the_report_gives_each_stage_its_cost_and_the_ratios(tmp_path: Path) -> None:
    out = tmp_path / "stages.md"
    P.write_report(_report(), out)
    text = out.read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if "|" in line}
    # us/request: 1e6 / rate; a stage's cost: the difference to the stage before it
    assert "| 50.0 | +10.0 | 1.00x |" in rows["parse"]  # read 40 us -> 50 us
    assert "| 100.0 | +20.0 | 0.50x |" in rows["hub"]  # apply 80 us -> 100 us
    assert "| 125.0 | +25.0 | 0.40x |" in rows["full"]
    assert "+" not in rows["read"].split(" | ")[4]  # the first stage has no cost of its own
    # CPU per request: 1 s of the loop thread over 2 s x 8,000/s = 62.5 us
    assert "62.5 / 125.0 / 31.2" in rows["full"]
    # RSGI's threads are all named python: its I/O is not told apart
    assert rows["rsgi-hub"].endswith("| 41.7 / - / 20.8 |")
    assert "The app (`full`) is 0.40x bare; `sse-fast serve` 0.40x." in text
    assert "parse + `Hub.publish` 1.20x the same stage on ASGI" in text


def test_cpu_is_read_by_thread_role() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    before = thread_cpu([os.getpid()])
    worker.start()
    give_up = time.monotonic() + 20
    try:
        while time.monotonic() < give_up:  # both threads spin (CPU is read in 10 ms ticks)
            now = thread_cpu([os.getpid()])  # while the thread runs: then it is listed
            if now["other"] >= before["other"] + 0.2 and now["loop"] >= before["loop"] + 0.05:
                break
    finally:
        stop.set()
        worker.join()
    assert now["other"] >= before["other"] + 0.2  # the spinning thread
    assert now["loop"] >= before["loop"] + 0.05  # this process's main thread
    assert now["io"] == before["io"] == 0.0  # no tokio thread here


def test_another_python_runs_bare_and_sse_fast_right_after_their_own() -> None:
    """``--compare-python``: the floor and the edge again, by the other interpreter,
    named by its version, each on a port of its own; the others once."""
    from benches.single_publish import BareTarget, with_python

    targets: list[peers.Target] = [
        BareTarget("bare", peers.HOST, 1),
        BareTarget("bare-cl", peers.HOST, 2, stop_at_length=True),
        peers.SseFastTarget("sse_fast", peers.HOST, 3),
    ]
    assert with_python(targets, "") == targets
    version = platform.python_version()
    chosen = with_python(targets, sys.executable)
    names = [t.name for t in chosen]
    assert names == ["bare", f"bare@py{version}", "bare-cl", "sse_fast", f"sse_fast@py{version}"]
    other = chosen[4]
    assert isinstance(other, peers.SseFastTarget) and other.python == sys.executable
    assert other.port not in (1, 2, 3)
    assert other.command(Path("/tmp"))[0][0] == sys.executable
    assert chosen[0].python == "" and chosen[0].command(Path("/tmp"))[0][0] == sys.executable
    assert peers.python_versions(sys.executable)["python"] == version
