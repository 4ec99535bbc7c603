"""The pure parts of ``benches/scaling.py``: the plan and its time bound, the rows of a
run, the median/min-max points, the report and the plots from a canned report. Fast,
no server; run explicitly (the default test run's ``testpaths = ["tests"]`` and the
tests never import benches)::

    python -m pytest -n 0 benches/test_scaling.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from benches import peers
from benches import scaling as S
from sse_fast import _compose
from sse_fast.loadgen import Result


def _result(**fields: Any) -> dict[str, Any]:
    """A run_load Result as measure_streams sees it: 1,000 streams, 2/s for 8 s."""
    values: dict[str, Any] = {
        "target": "sse_fast",
        "connections": 1000,
        "connected": 1000,
        "connect_errors": 0,
        "connect_seconds": 0.5,
        "topics": 1,
        "publish_rate": 2.0,
        "published": 16,
        "publish_errors": 0,
        "duration": 8.0,
        "expected": 16_000,
        "delivered": 16_000,
        "delivered_per_second": 2000.0,
        "lost": 0,
        "duplicates": 0,
        "closed_by_server": 0,
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "p999_ms": 25.0,
        "max_ms": 30.0,
        "server_rss_base_kb": 100_000,
        "server_rss_idle_kb": 120_480,
        "rss_per_connection_kb": 20.48,
        "server_cores_used": 0.1,
    }
    values.update(fields)
    return dataclasses.asdict(Result(**values))


def _step(**fields: Any) -> dict[str, Any]:
    """A benches.notifications step row (the fields scaling reads)."""
    row = {
        "target": "nchan",
        "mode": "single",
        "offered_per_s": 0,
        "published": 80_000,
        "published_per_s": 10_000.0,
        "delivered": 80_000,
        "delivered_per_s": 10_000.0,
        "publish_p99_ms": 5.0,
        "delivery_p99_ms": 6.0,
        "server_cpu": 0.9,
        "load_cpu": 0.5,
        "behind": False,
    }
    return {**row, **fields}


def test_plan_quick_and_full() -> None:
    quick, full = S.plan(quick=True), S.plan(quick=False)
    assert (quick["sizes"], quick["runs"]) == ([1000, 2000], 1)
    assert (full["sizes"][0], full["sizes"][-1], full["runs"]) == (1000, 40_000, 2)
    assert quick["broadcast"]["duration"] < full["broadcast"]["duration"]
    assert full["workers"] == 3  # 40,000 streams at 20,000 descriptors per process
    assert S.plan(quick=False, sizes=[5000, 1000], runs=3)["sizes"] == [1000, 5000]


def test_the_full_run_is_bounded() -> None:
    full = S.estimate_minutes(S.plan(quick=False), S.PARTS, S.TARGET_ORDER)
    quick = S.estimate_minutes(S.plan(quick=True), S.PARTS, S.TARGET_ORDER)
    assert 10 < full <= 35
    assert quick <= 3


def test_runs_planned_share_the_broadcast_and_keep_the_floor_to_memory() -> None:
    p = S.plan(quick=True)
    assert S.runs_planned(p, S.PARTS, S.TARGET_ORDER) == [
        ("broadcast", "sse_fast"),
        ("broadcast", "nchan"),
        ("floor", "bare-granian"),
        ("notifications", "sse_fast"),
        ("notifications", "nchan"),
    ]
    assert S.runs_planned(p, ["delivery"], S.TARGET_ORDER) == [
        ("broadcast", "sse_fast"),
        ("broadcast", "nchan"),
    ]
    assert S.runs_planned(p, ["notifications"], ["bare-granian"]) == []


def test_notification_params_keep_the_chosen_ways_and_room_for_every_channel() -> None:
    p = S.plan(quick=False, ways=["single", "stream"])
    n = S.notification_params(p, 40_000)
    assert n["subscribers"] == 40_000
    assert n["ladders"]["single"] == [0] and n["ladders"]["batch"] == []
    assert n["ladders"]["stream"]
    assert n["heartbeat"] == p["heartbeat_s"]
    assert [S.nchan_memory(k) for k in (1000, 10_000, 10_001, 40_000)] == [
        "512m",
        "512m",
        "1024m",
        "2048m",
    ]


def test_streams_row_adds_the_broadcast_peak_and_fails_short_runs() -> None:
    row = S.streams_row(_result(), 1000, 1, peak_kb=125_000)
    assert row["rss_per_stream_broadcast_kb"] == 25.0
    assert "error" not in row
    short = S.streams_row(
        _result(connected=980, connect_failures={"refused": 20}), 1000, 2, peak_kb=None
    )
    assert short["error"] == "only 980 of 1,000 streams connected (20 x refused)"
    assert short["rss_per_stream_broadcast_kb"] is None


def test_rss_sampler_peak_counts_from_the_first_publish() -> None:
    sampler = S.RssSampler(list)
    sampler.samples = [(1.0, 500), (2.0, 300), (3.0, 400), (4.0, 0)]
    assert sampler.peak(since=1.5) == 400
    assert sampler.peak(since=5.0) is None


def test_notification_rows_take_each_ways_best_step() -> None:
    steps = [
        _step(target="sse_fast", mode="stream", offered_per_s=10_000, delivered_per_s=9_990.0),
        _step(
            target="sse_fast",
            mode="stream",
            offered_per_s=20_000,
            delivered_per_s=15_000.0,
            behind=True,
        ),
    ]
    rows = S.notification_rows(steps, "sse_fast", 5000, 1, ["single", "stream"])
    assert [(r["way"], r["offered_per_s"], r["size"]) for r in rows] == [("stream", 10_000, 5000)]


def test_aggregate_gives_median_and_range_over_the_runs_that_did_not_fail() -> None:
    rows = [
        S.streams_row(_result(rss_per_connection_kb=v), 1000, i, None)
        for i, v in enumerate((18.0, 20.0, 19.0))
    ]
    rows.append({"target": "sse_fast", "size": 1000, "run": 4, "error": "TimeoutError: x"})
    (point,) = S.aggregate(rows, S.MEMORY_METRICS, lambda r: r["target"])
    assert (point["runs"], point["ok"], point["failed"]) == (4, 3, ["TimeoutError: x"])
    assert point["per_stream_idle_kb"] == {"median": 19.0, "min": 18.0, "max": 20.0}
    assert point["idle_mb"]["median"] == pytest.approx(120_480 / 1024)
    assert point["per_stream_broadcast_kb"] is None
    (delivery,) = S.aggregate(rows, S.DELIVERY_METRICS, lambda r: r["target"])
    assert delivery["delivered_share"]["median"] == 1.0
    assert delivery["publishes_per_s"]["median"] == 2.0


def test_cells() -> None:
    assert S.cell(None) == "-"
    assert S.cell({"median": 2.0, "min": 2.0, "max": 2.0}) == "2.0"
    assert S.cell({"median": 1500.0, "min": 1000.0, "max": 2000.0}, ",.0f") == (
        "1,500 (1,000-2,000)"
    )


def _report() -> dict[str, Any]:
    p = S.plan(quick=True)
    broadcast = [
        S.streams_row(_result(target=t, connections=n, connected=n), n, 1, peak_kb=130_000)
        for t in ("sse_fast", "nchan")
        for n in p["sizes"]
    ]
    floor = [
        S.streams_row(_result(target="bare-granian", connections=n, connected=n), n, 1, None)
        for n in p["sizes"]
    ]
    failed = {"target": "nchan", "size": 2000, "run": 1, "way": "single", "error": "boom"}
    notes = [{**_step(target="sse_fast"), "way": "single", "size": 1000, "run": 1}, failed]
    return {
        "argv": ["--quick"],
        "machine": {"cpu": "test cpu", "date": "2026-11-25T10:00:00Z", "cores": 2},
        "parts": S.PARTS,
        "targets": S.TARGET_ORDER,
        "skipped": {},
        "failures": [{"scenario": "notifications 2,000", "target": "nchan", "error": "boom"}],
        "versions": {"nchan": {"nchan": "1.3.6"}},
        "notes": {"nchan": ["worker_processes 3"]},
        "commands": {},
        "conditions": p,
        "rows": {"broadcast": broadcast, "floor": floor, "notifications": notes},
    }


def test_report_and_plots_from_a_canned_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = _report()
    S.write_outputs(report, tmp_path / "scaling")
    text = (tmp_path / "scaling.md").read_text()
    assert "Generated by `python -m benches.scaling --quick`" in text
    assert text.startswith("# How cost grows: 1,000 to 2,000 open streams\n")  # the sizes run
    assert "**3 worker processes at every size**" in text
    assert "| sse_fast | 1,000 | 1/1 | 20.5 | 30.0 | 118 | 127 |" in text
    assert "| bare-granian | 2,000 | 1/1 | 20.5 | - | 118 | - |" in text
    assert "| nchan | 2,000 | 1/1 | 4,000 | 2.00 | 2,000 | 100.0% |" in text
    assert "| sse_fast single | 1,000 | 1/1 | 10,000 | 10,000 | 6.0 | 5.0 |" in text
    assert "| nchan single | 2,000 | 0/1 **failed**: boom | - |" in text
    assert "- **failed** notifications 2,000 on nchan: boom" in text
    for part in ("memory", "delivery", "notifications"):
        assert f"![{part}](scaling_{part}.png)" in text
        assert (tmp_path / f"scaling_{part}.png").stat().st_size > 10_000
    assert (tmp_path / "scaling.json").exists()


def test_bare_granian_runs_the_floor_app_with_the_targets_workers(tmp_path: Path) -> None:
    target = S.BareGranianTarget("bare-granian", "127.0.0.1", 12345, workers=3)
    argv, cwd, env = target.command(tmp_path)
    assert argv[-1] == "benches.stream_memory:floor_app"
    assert argv[argv.index("--workers") + 1] == "3"
    assert argv[argv.index("--port") + 1] == "12345"
    assert cwd == peers.REPO_ROOT and str(peers.REPO_ROOT) in env["PYTHONPATH"]
    assert target.publish_request("t", "x") == ("GET", "/healthz", {}, b"")
    # Granian's allocator as `sse-fast serve` sets it, whatever the caller's shell has
    assert peers.ALLOCATOR_VARIABLE == _compose.ALLOCATOR_VARIABLE
    assert (
        env[_compose.ALLOCATOR_VARIABLE]
        == _compose.allocator_options(0)
        == "dirty_decay_ms:0,muzzy_decay_ms:0"
    )


def test_the_callers_allocator_options_reach_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_RJEM_MALLOC_CONF", "dirty_decay_ms:10000")
    assert "_RJEM_MALLOC_CONF" not in peers.clean_env()
