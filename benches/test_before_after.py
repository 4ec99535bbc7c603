"""``benches/before_after.py``'s order of runs, its figures and verdicts, and the check
that a server runs its own tree's native core (``peers.source_problem``). No server; a
few seconds::

    python -m pytest -n 0 benches/test_before_after.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benches import before_after as B
from benches import peers

BUILT = sorted((peers.REPO_ROOT / "sse_fast" / "_core").glob("*_ext*.so"))


def _child(code: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process run from the repository's root, once it printed "ready"."""
    env = {k: v for k, v in os.environ.items() if k != "SSE_FAST_NO_EXTENSIONS"}
    with subprocess.Popen(
        [sys.executable, "-c", code + "; print('ready', flush=True); sys.stdin.read()"],
        cwd=peers.REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            yield proc
        finally:
            proc.kill()


@pytest.fixture
def with_core() -> Iterator[subprocess.Popen[str]]:
    yield from _child("import sys, sse_fast._core.topic_ext")


@pytest.fixture
def without_core() -> Iterator[subprocess.Popen[str]]:
    yield from _child("import sys")


@pytest.mark.skipif(not BUILT, reason="no native core built in place")
def test_a_native_core_from_another_tree_is_named(
    with_core: subprocess.Popen[str], tmp_path: Path
) -> None:
    assert peers.source_problem([with_core.pid], peers.REPO_ROOT) is None
    problem = peers.source_problem([with_core.pid], tmp_path)
    assert problem is not None
    assert f"from {BUILT[0].resolve().parent}, not from {tmp_path}" in problem


def test_a_process_without_the_native_core_is_refused(
    without_core: subprocess.Popen[str],
) -> None:
    problem = peers.source_problem([without_core.pid], peers.REPO_ROOT)
    assert problem is not None and "no native module" in problem


def _args(**changes: Any) -> argparse.Namespace:
    args = B.parse(["--before", "/nowhere", "--scenarios", "fanout,notifications"])
    return argparse.Namespace(**{**vars(args), **changes})


def test_rounds_interleave_before_and_after_and_save_after_each_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[tuple[int, str, str]] = []

    def run_one(scenario: str, tree: str, index: int, target: Any, args: Any) -> dict[str, Any]:
        order.append((index, scenario, tree))
        return {"scenario": scenario, "tree": tree, "round": index, "target": target}

    monkeypatch.setattr(B, "run_one", run_one)
    report: dict[str, Any] = {"runs": []}
    saved: list[int] = []
    targets: Any = {"before": "b", "after": "a"}
    B.run_rounds(targets, _args(rounds=2), report, lambda: saved.append(len(report["runs"])))
    assert order == [
        (1, "fanout", "before"),
        (1, "fanout", "after"),
        (1, "notifications", "before"),
        (1, "notifications", "after"),
        (2, "fanout", "before"),
        (2, "fanout", "after"),
        (2, "notifications", "before"),
        (2, "notifications", "after"),
    ]
    assert saved == list(range(1, 9))
    assert [r["target"] for r in report["runs"][:2]] == ["b", "a"]


def test_no_round_starts_that_would_end_after_until(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    def run_one(scenario: str, tree: str, index: int, target: Any, args: Any) -> dict[str, Any]:
        clock[0] += 120.0  # each run takes two minutes: a round, eight
        return {"scenario": scenario, "tree": tree, "round": index}

    monkeypatch.setattr(B, "run_one", run_one)
    end = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=6)
    report: dict[str, Any] = {"runs": []}
    targets: Any = {"before": "b", "after": "a"}
    args = _args(rounds=5, until=end.strftime("%H:%M"))
    B.run_rounds(targets, args, report, lambda: None, clock=lambda: clock[0])
    assert len(report["runs"]) == 4  # the second round would end 8 minutes from now
    assert report["stopped_early"].startswith("after round 1")


def test_within_noise_is_a_difference_no_larger_than_the_rounds_spread() -> None:
    close = B.compare([100.0, 104.0], [103.0, 101.0])
    assert close["ratio"] == pytest.approx(204 / 204)
    assert close["noise"] == pytest.approx(4 / 102) and close["within"] is True
    apart = B.compare([100.0, 101.0], [110.0, 111.0])
    assert apart["ratio"] == pytest.approx(221 / 201) and apart["within"] is False
    assert B.compare([100.0], [101.0])["within"] is None  # one round: no noise known
    assert B.spread([90.0, 110.0]) == pytest.approx(0.2)


def _step(mode: str, rate: int, delivered: float, behind: bool = False) -> dict[str, Any]:
    return {
        "mode": mode,
        "offered_per_s": rate,
        "delivered_per_s": delivered,
        "behind": behind,
        "loop_us_per_event": 7.0 if rate else 6.0,
        "io_us_per_event": 10.0,
        "lost": 0,
        "duplicates": 0,
    }


def _notifications(tree: str, index: int, top: float) -> dict[str, Any]:
    rows = [_step("single", 0, 40_000.0), _step("batch", 10_000, 10_000.0)]
    rows += [_step("batch", 20_000, 20_000.0), _step("batch", 40_000, top, behind=top < 38_000)]
    return {"scenario": "notifications", "tree": tree, "round": index, "rows": rows}


def test_figures_at_the_highest_rate_every_run_kept_up_with() -> None:
    runs = [
        _notifications("before", 1, 40_000.0),
        _notifications("after", 1, 30_000.0),  # behind at 40,000/s
        {"scenario": "fanout", "tree": "before", "round": 1, "result": {"p99_ms": 250.0}},
        {"scenario": "fanout", "tree": "after", "round": 1, "error": "RuntimeError()"},
    ]
    assert B.common_rate(runs, "batch") == 20_000
    chosen = {figure[1]: figure for figure in B.figures(runs, ["single", "batch"])}
    assert "batch: server us per event (loop + I/O) at 20,000/s" in chosen
    most = B.values(runs, chosen["batch: most delivered /s in any step"])
    assert most == {("before", 1): 40_000.0, ("after", 1): 30_000.0}
    assert B.values(runs, chosen["single: server us per event (loop + I/O) at wrk's step"]) == {
        ("before", 1): 16.0,
        ("after", 1): 16.0,
    }
    assert B.values(runs, chosen["delivery p99 ms"]) == {("before", 1): 250.0}  # not the failed
    table = B.rounds_table(runs, [chosen["batch: most delivered /s in any step"]])
    assert table[-1] == "| batch: most delivered /s in any step | 1 | 40,000 | 30,000 | 0.750 |"
    assert any("**failed**" in line for line in B.checks(runs))


def test_without_wrk_the_single_way_in_is_refused_before_any_round(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing wrk failed every notifications run with "wrk gave no count of
    requests"; now the command says what to install (or which modes need none)."""
    monkeypatch.setattr("benches.before_after.shutil.which", lambda name: None)
    with pytest.raises(SystemExit) as exit:
        B.parse(["--before", "/x"])
    assert exit.value.code == 2
    assert "needs wrk (Debian: apt-get install wrk), or --modes batch,stream" in (
        capsys.readouterr().err
    )
    assert B.parse(["--before", "/x", "--modes", "batch,stream"]).modes == "batch,stream"
    assert B.parse(["--before", "/x", "--scenarios", "fanout"]).scenarios == "fanout"
