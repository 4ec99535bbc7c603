"""Tests marked ``alone`` run while no other test does, in one stretch on one worker
(tests/support/alone.py): a session of three workers with ``alone`` tests and others,
each logging when its body started and ended."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
XDIST = ["-n", "3", "--dist", "loadgroup"]

#: the suite's two plugins, ordinary tests and ``alone`` ones, each long enough (0.2 s)
#: for the others to run beside it if they may
MODULES = {
    "conftest.py": """
pytest_plugins = ["tests.support.xdist_groups", "tests.support.alone"]
""",
    "test_session.py": """
import os
import time

import pytest


def _run(request):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write(f"{request.node.name} {worker} start {time.monotonic()}\\n")
    time.sleep(0.2)
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write(f"{request.node.name} {worker} end {time.monotonic()}\\n")


@pytest.mark.parametrize("n", range(3))
def test_before(n, request):
    _run(request)


@pytest.mark.alone
@pytest.mark.parametrize("n", range(2))
def test_alone(n, request):
    _run(request)


@pytest.mark.parametrize("n", range(6))
def test_ordinary(n, request):
    _run(request)


@pytest.mark.alone
def test_also_alone(request):
    _run(request)
""",
}


def test_alone_tests_run_on_one_worker_in_one_stretch_with_nothing_beside(
    tmp_path: Path,
) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    alone: runs alone\n")
    for name, text in MODULES.items():
        (tmp_path / name).write_text(text)
    log = tmp_path / "ran.log"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *XDIST],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "RAN_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    spans: dict[str, dict[str, float]] = {}
    workers = {}
    for line in log.read_text().splitlines():
        name, worker, what, at = line.split()
        spans.setdefault(name, {})[what] = float(at)
        workers[name] = worker
    assert len(spans) == 12, spans
    alone = {name: s for name, s in spans.items() if "alone" in name}
    others = {name: s for name, s in spans.items() if "alone" not in name}
    assert len({workers[name] for name in alone}) == 1, f"alone tests on several: {workers}"
    first = min(s["start"] for s in alone.values())
    last = max(s["end"] for s in alone.values())
    beside = [n for n, s in others.items() if s["start"] < last and s["end"] > first]
    assert not beside, f"ran beside or between the alone tests: {beside}, {spans}"
