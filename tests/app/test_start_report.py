"""``sse_fast/_startup.py``'s start reports: a run killed with SIGKILL leaves its report's
directory behind (582 of them on the project's VM after a day of test runs); the next
start removes those whose process is gone, and only those. Real processes: the pid of a
process that has exited and was reaped, as a killed run's is."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sse_fast._startup import StartReport, remove_stale_reports

#: the tests that need a gone process's pid
GONE_PID = pytest.mark.processes("the pid of a real process that has exited and was reaped")


def _report(root: Path, name: str, pid: int | None) -> Path:
    directory = root / f"sse-fast-start-{name}"
    directory.mkdir()
    if pid is not None:
        (directory / "supervisor").write_text(str(pid))
    return directory


def _gone_pid() -> int:
    """The id of a process that has exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@GONE_PID
def test_the_reports_of_killed_runs_are_removed_and_only_they(tmp_path: Path) -> None:
    killed = _report(tmp_path, "killed", _gone_pid())
    running = _report(tmp_path, "running", os.getpid())
    starting = _report(tmp_path, "starting", None)  # mkdtemp done, its pid not written yet
    garbled = _report(tmp_path, "garbled", None)
    (garbled / "supervisor").write_text("not a pid")
    other = tmp_path / "sse-fast-other"  # not a report's name
    other.mkdir()
    (tmp_path / "sse-fast-start-file").write_text("1")  # a file, not a report's directory
    assert remove_stale_reports(str(tmp_path)) == 1
    assert not killed.exists()
    assert running.exists() and starting.exists() and garbled.exists() and other.exists()
    assert (tmp_path / "sse-fast-start-file").exists()
    assert remove_stale_reports(str(tmp_path)) == 0


@GONE_PID
def test_a_new_report_sweeps_the_temporary_directory_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = _report(tmp_path, "killed", _gone_pid())
    report = StartReport.create()
    try:
        assert not killed.exists()
        here = Path(report.path).parent
        assert here.parent == tmp_path and (here / "supervisor").read_text() == str(os.getpid())
    finally:
        report.remove()
    assert not here.exists()


def test_no_temporary_directory_is_no_error(tmp_path: Path) -> None:
    assert remove_stale_reports(str(tmp_path / "absent")) == 0
