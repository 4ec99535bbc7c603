"""``scripts/under-load`` runs pytest several times beside CPU hogs and names every test
that failed in any run, with how often; it exits 1 when one did. Run for real on a
small file of the test's own (one test that fails on its first run only, one that
always passes), without hogs: the script's bookkeeping, not the suite, is under test.
Real processes: the script and the pytest runs it starts, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the script's own checks, not the package's: the same in both modes
pytestmark = [
    pytest.mark.mode_independent,
    pytest.mark.processes("scripts/under-load and the pytest runs it starts"),
]

TESTS = """
from pathlib import Path

MARK = Path(__file__).with_name("ran-once")


def test_fails_on_its_first_run_only():
    first = not MARK.exists()
    MARK.touch()
    assert not first


def test_always_passes():
    pass
"""


def _under_load(tmp_path: Path, runs: int) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(TESTS)
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "under-load"),
            "--runs",
            str(runs),
            "--hogs",
            "0",
            "--mode",
            "compiled",
            "--",
            "-p",
            "no:cacheprovider",
            "-q",
            "-n",
            "0",
            str(tmp_path / "test_sample.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_test_that_failed_once_is_named_with_its_runs(tmp_path: Path) -> None:
    done = _under_load(tmp_path, runs=3)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "test_fails_on_its_first_run_only | compiled | 1 of 3 (1) |" in done.stdout
    assert "test_always_passes" not in done.stdout
    # what it said is kept: the runs' own output scrolls away
    said = done.stdout.split("test_fails_on_its_first_run_only, the first time it failed:")[1]
    assert "(run 1, compiled)" in said and "assert not first" in said


def test_runs_where_every_test_passed_exit_0(tmp_path: Path) -> None:
    (tmp_path / "ran-once").touch()
    done = _under_load(tmp_path, runs=2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no test failed in 2 compiled run(s)" in done.stdout
