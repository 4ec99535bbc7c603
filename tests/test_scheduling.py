"""How the suite's tests are spread over pytest-xdist's workers: ``xdist_group``
keeps a group's tests on one worker (xdist's ``--dist loadgroup``), and the tests
marked ``alone`` run on one worker in one stretch while no other test runs
(tests/support/alone.py).

The suite's groups rest on the first: the docs site is built once
(tests/e2e/test_docs_site.py), an original suite's run is reused
(tests/adapters/originals/), a module's shared server serves its tests
(tests/adapters/test_django.py). pytest 9.2 with pytest-xdist 3.8 spread a group over
every worker without a word (pytest-xdist issue #1386): the test extra keeps pytest
below 9.2, and the last test here fails, in the suite's own run, when a later pair of
versions breaks it again. One session of four workers (the ``alone`` plugin only: a
second's start) runs grouped, ordinary and ``alone`` tests and a module-scoped
fixture's costly setup, each logging its worker and when it started and ended; the
tests here read that log. Real processes: a nested pytest session with xdist workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: the session's tests run on one worker: its log is made once; the first one's setup
#: runs the nested session, which may take 5 minutes (below). xdist and the plugin
#: schedule tests, whatever the core: run in the extension mode only
pytestmark = [
    pytest.mark.processes("a nested pytest session with xdist workers"),
    pytest.mark.xdist_group("scheduling"),
    pytest.mark.timeout(420),
    pytest.mark.mode_independent,
]

#: the plugin, a fixture that logs each test's body (0.2 s: long enough for others to
#: run beside it if they may), a module of one group, and one with a test of another
#: group, tests in none and ``alone`` tests among them
MODULES = {
    "conftest.py": """
import os
import time

import pytest

pytest_plugins = ["tests.support.alone"]


def log(name, start):
    with open(os.environ["RAN_LOG"], "a") as ran:
        worker = os.environ["PYTEST_XDIST_WORKER"]
        ran.write(f"{name} {worker} {start} {time.monotonic()}\\n")


@pytest.fixture
def ran(request):
    def body():
        start = time.monotonic()
        time.sleep(0.2)
        log(request.node.nodeid, start)

    return body


@pytest.fixture(scope="module")
def prepared(request):  # a module's costly setup: a docs site's build, a suite's run
    start = time.monotonic()
    time.sleep(0.6)
    log(f"{request.module.__name__}.py::prepared", start)
""",
    "test_together.py": """
import pytest

pytestmark = pytest.mark.xdist_group("together")


@pytest.mark.parametrize("n", range(6))
def test_grouped(n, ran):
    ran()
""",
    "test_apart.py": """
import pytest


@pytest.mark.parametrize("n", range(3))
def test_before(n, ran):
    ran()


@pytest.mark.alone
@pytest.mark.parametrize("n", range(2))
def test_alone(n, ran):
    ran()


@pytest.mark.parametrize("n", range(4))
@pytest.mark.xdist_group("apart")
def test_in_another_group(n, ran):
    ran()


@pytest.mark.parametrize("n", range(4))
def test_in_no_group(n, ran):
    ran()


@pytest.mark.alone
def test_also_alone(ran):
    ran()
""",
    "test_prepared.py": """
import pytest

pytestmark = pytest.mark.xdist_group("prepared")


@pytest.mark.parametrize("n", range(2))
def test_after_a_costly_setup(n, prepared, ran):
    ran()
""",
}

Spans = dict[str, tuple[str, float, float]]  # test id -> worker, body's start and end


@pytest.fixture(scope="module")
def spans(tmp_path_factory: pytest.TempPathFactory) -> Spans:
    """Where and when each test of the session ran."""
    where = tmp_path_factory.mktemp("session")
    (where / "pytest.ini").write_text("[pytest]\nmarkers =\n    alone: runs alone\n")
    for name, text in MODULES.items():
        (where / name).write_text(text)
    log = where / "ran.log"
    xdist = ["-p", "xdist", "-n", "4", "--dist", "loadgroup"]
    # 8 s on a quiet machine; beside a whole suite's start (six workers collecting cold,
    # docs builds) it once took over 60 s: a hang still fails, within 5 minutes, showing
    # where each stuck test was (faulthandler) and what the session ran
    limit = 300
    with subprocess.Popen(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist),
            *("-o", f"faulthandler_timeout={limit - 60}"),
        ],
        cwd=where,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "RAN_LOG": str(log),
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # a second's start, not six
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its workers are killed with it
    ) as session:
        try:
            output, _ = session.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(session.pid, signal.SIGKILL)
            output, _ = session.communicate()
            ran = log.read_text() if log.exists() else "(nothing)\n"
            pytest.fail(f"the session took over {limit} s; it printed:\n{output}\nran:\n{ran}")
    assert session.returncode == 0, output
    found: Spans = {}
    for line in log.read_text().splitlines():
        nodeid, worker, start, end = line.split()
        found[nodeid] = (worker, float(start), float(end))
    assert len(found) == 23, found
    return found


def test_a_groups_tests_run_on_one_worker_and_say_their_group(spans: Spans) -> None:
    """Each group's tests on one worker, each with its ``@group`` id (what xdist's
    scheduler groups by)."""
    for group, tests in (("together", 6), ("apart", 4)):
        suffix = f"@{group}"
        here = {nodeid: span[0] for nodeid, span in spans.items() if nodeid.endswith(suffix)}
        assert len(here) == tests, f"the ids do not end in @{group}: {sorted(spans)}"
        assert len(set(here.values())) == 1, f"{group} ran on several workers: {here}"


def test_alone_tests_run_on_one_worker_in_one_stretch_with_nothing_beside(
    spans: Spans,
) -> None:
    alone = {nodeid: span for nodeid, span in spans.items() if "alone" in nodeid}
    assert len(alone) == 3, sorted(spans)
    assert len({worker for worker, *_ in alone.values()}) == 1, f"on several workers: {alone}"
    first = min(start for _, start, _ in alone.values())
    last = max(end for *_, end in alone.values())
    beside = [
        nodeid
        for nodeid, (_, start, end) in spans.items()
        if nodeid not in alone and start < last and end > first
    ]
    assert not beside, f"ran beside or between the alone tests: {beside}, {spans}"


def test_this_runs_tests_carry_their_group(request: pytest.FixtureRequest) -> None:
    """In the suite's own run (``-n 6 --dist loadgroup`` from pyproject.toml), a
    grouped test's id names its group: what xdist's scheduler groups by (pytest 9.2
    with pytest-xdist 3.8 lost it)."""
    if not hasattr(request.config, "workerinput") or not request.config.getvalue("loadgroup"):
        pytest.skip("checks a run of several workers with --dist loadgroup (the default)")
    assert request.node.nodeid.endswith("@scheduling"), request.node.nodeid
