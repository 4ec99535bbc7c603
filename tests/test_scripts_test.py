"""``scripts/test`` runs both modes (at once) whatever the other gives, says how each
ended (one line per mode), and fails if either failed; ``.ci/run`` fails with it.

The real script runs, with a fake ``python`` first on ``PATH`` (and fake ``apt-get``
and ``sudo``, so that a tool missing on this machine installs nothing): the fake
records each call with its mode and exits as the test tells it for each mode, so no
test suite runs here. Real processes: the script's own steps, as bash runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the script's own checks, not the package's: the same in both modes
pytestmark = [
    pytest.mark.mode_independent,
    pytest.mark.processes("scripts/test and .ci/run as bash runs them, fakes first on PATH"),
]

#: records ``<mode>|<arguments>`` (mode ``alone``: the compiled core's alone tests'
#: run) and exits as FAKE_EXIT_ALONE / FAKE_EXIT_COMPILED / FAKE_EXIT_PURE say for a
#: test run, 0 for pip, 99 for anything else
FAKE_PYTHON = """#!/bin/sh
mode=compiled
[ -n "${SSE_FAST_NO_EXTENSIONS:-}" ] && mode=pure
[ "${SSE_FAST_TESTS_ALONE:-}" = only ] && mode=alone
echo "$mode|$*" >> "$FAKE_LOG"
case "$*" in
    "-m pip "*) exit 0 ;;
    "-m pytest"*) case $mode in
        alone) exit "$FAKE_EXIT_ALONE" ;;
        pure) exit "$FAKE_EXIT_PURE" ;;
        *) exit "$FAKE_EXIT_COMPILED" ;;
    esac ;;
esac
exit 99
"""

#: ``.ci/run``'s next steps after scripts/test, kept from running for real should the
#: script's failure not stop it (every other call is recorded by the fake python)
FAKE_BASH = """#!/bin/sh
case "$1" in
    .ci/pythons | .ci/sdist-check) echo "bash|$*" >> "$FAKE_LOG"; exit 0 ;;
esac
exec {bash} "$@"
"""


def _run(
    tmp_path: Path, command: list[str], compiled: int, pure: int, alone: int = 5
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``command`` run from the checkout with the fakes first on PATH; its result and
    the fake python's record (one ``mode|arguments`` line a call)."""
    fakes = tmp_path / "bin"
    fakes.mkdir()
    bash = shutil.which("bash")
    assert bash is not None
    for name, text in {
        "python": FAKE_PYTHON,
        "apt-get": "#!/bin/sh\nexit 0\n",
        "sudo": '#!/bin/sh\nexec "$@"\n',
        "bash": FAKE_BASH.format(bash=bash),
    }.items():
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    log = tmp_path / "calls"
    log.touch()
    env = {
        **os.environ,
        "PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_EXIT_COMPILED": str(compiled),
        "FAKE_EXIT_PURE": str(pure),
        "FAKE_EXIT_ALONE": str(alone),
        "CI": "1",
    }
    env.pop("SSE_FAST_NO_EXTENSIONS", None)
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done, log.read_text().splitlines()


@pytest.mark.parametrize(
    ("compiled", "pure", "lines"),
    [
        (0, 0, ["compiled core: passed", "pure-Python twins: passed"]),
        (1, 0, ["compiled core: FAILED (exit 1)", "pure-Python twins: passed"]),
        (0, 1, ["compiled core: passed", "pure-Python twins: FAILED (exit 1)"]),
        (1, 2, ["compiled core: FAILED (exit 1)", "pure-Python twins: FAILED (exit 2)"]),
        (
            5,
            0,
            ["compiled core: FAILED (exit 5: no tests collected)", "pure-Python twins: passed"],
        ),
        (
            5,
            5,
            [
                "compiled core: FAILED (exit 5: no tests collected)",
                "pure-Python twins: FAILED (exit 5: no tests collected)",
            ],
        ),
        (
            0,
            5,
            [
                "compiled core: passed",
                "pure-Python twins: nothing to run (the tests selected are not for the twins' run)",
            ],
        ),
    ],
    ids=[
        "both-pass",
        "compiled-fails",
        "pure-fails",
        "both-fail",
        "none-collected",
        "none-in-either",
        "only-mode-independent",
    ],
)
def test_both_modes_run_and_each_ends_with_a_line(
    tmp_path: Path, compiled: int, pure: int, lines: list[str]
) -> None:
    """Both pytest runs happen, each with the script's arguments, whatever the first
    gave; the output ends with one line per mode; the exit status is 0 only when both
    passed (5, no test collected, is a failure, but for the twins' run after a compiled
    run that passed: its selection was all left out of the twins' run)."""
    done, calls = _run(tmp_path, ["scripts/test", "-k", "resume"], compiled, pure)
    runs = [c for c in calls if "-m pytest" in c]
    # the alone tests first, then both runs at the same time: in either order
    assert runs[0] == "alone|-m pytest -n 0 -p no:cacheprovider -k resume", calls
    assert sorted(runs[1:]) == ["compiled|-m pytest -k resume", "pure|-m pytest -n 3 -k resume"]
    assert done.stdout.splitlines()[-2:] == [f"scripts/test: {line}" for line in lines], (
        done.stdout[-2000:] + done.stderr[-2000:]
    )
    # 0 only when both passed, or the twins had only tests their run leaves out
    assert (done.returncode == 0) == (compiled == 0 and pure in (0, 5)), done.returncode


def test_ci_run_stops_when_scripts_test_fails(tmp_path: Path) -> None:
    """A failure in the compiled core's run fails ``.ci/run`` (after the twins' run),
    and nothing after scripts/test runs."""
    done, calls = _run(tmp_path, [".ci/run"], compiled=1, pure=0)
    assert done.returncode != 0
    assert "scripts/test: compiled core: FAILED (exit 1)" in done.stdout
    assert sorted(calls[-2:]) == ["compiled|-m pytest", "pure|-m pytest -n 3"], calls


@pytest.mark.parametrize(
    ("alone", "compiled", "line"),
    [
        (0, 5, "compiled core: passed"),  # only alone tests selected
        (5, 0, "compiled core: passed"),  # none of them selected
        (1, 0, "compiled core: FAILED (exit 1)"),
        (0, 2, "compiled core: FAILED (exit 2)"),
        (5, 5, "compiled core: FAILED (exit 5: no tests collected)"),
    ],
    ids=["only-alone", "no-alone", "alone-fails", "rest-fails", "neither"],
)
def test_the_alone_tests_run_first_and_count_in_the_compiled_cores_line(
    tmp_path: Path, alone: int, compiled: int, line: str
) -> None:
    """The compiled core's alone tests run first, in one process; the compiled core's
    line says how both its runs ended together: a failure of either, else exit 5 only
    when neither had a test."""
    done, _ = _run(tmp_path, ["scripts/test"], compiled, 0, alone=alone)
    assert f"scripts/test: {line}" in done.stdout.splitlines(), done.stdout[-2000:]
