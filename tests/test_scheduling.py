"""How the suite's tests are spread over pytest-xdist's workers (tests/support/):
``xdist_group`` keeps a group's tests on one worker (``xdist_groups.py``), and the tests
marked ``alone`` run on one worker in one stretch while no other test runs
(``alone.py``).

The suite's groups rest on the first: the docs site is built once
(tests/e2e/test_docs_site.py), an original suite's run is reused
(tests/adapters/originals/), the embedding examples' wheel is built by one worker at a
time (tests/e2e/test_embedding_installs.py); pytest 9.2 with pytest-xdist 3.8 spread a
group over every worker without a word. One session of three workers (the two plugins
only: a second's start) runs grouped, ordinary and ``alone`` tests, each logging its
worker and when its body started and ended; the tests here read that log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: the session's tests run on one worker: its log is made once
pytestmark = pytest.mark.xdist_group("scheduling")

#: the plugins, a fixture that logs each test's body (0.2 s: long enough for others to
#: run beside it if they may), a module of one group, and one with a test of another
#: group, tests in none and ``alone`` tests among them
MODULES = {
    "conftest.py": """
import os
import time

import pytest

pytest_plugins = ["tests.support.xdist_groups", "tests.support.alone"]


@pytest.fixture
def ran(request):
    def body():
        start = time.monotonic()
        time.sleep(0.2)
        with open(os.environ["RAN_LOG"], "a") as log:
            worker = os.environ["PYTEST_XDIST_WORKER"]
            log.write(f"{request.node.nodeid} {worker} {start} {time.monotonic()}\\n")

    return body
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
    xdist = ["-p", "xdist", "-n", "3", "--dist", "loadgroup"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist],
        cwd=where,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "RAN_LOG": str(log),
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # a second's start, not six
        },
        capture_output=True,
        text=True,
        # 8 s on a quiet machine; beside a whole suite's start (six workers collecting
        # cold, docs builds) it once took over 60 s: a hang still fails, within 5 minutes
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found: Spans = {}
    for line in log.read_text().splitlines():
        nodeid, worker, start, end = line.split()
        found[nodeid] = (worker, float(start), float(end))
    assert len(found) == 20, found
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
    """In the suite's own run (``-n 6 --dist loadgroup`` from pyproject.toml), the
    plugin is registered: a grouped test's id names its group."""
    if not hasattr(request.config, "workerinput") or not request.config.getvalue("loadgroup"):
        pytest.skip("checks a run of several workers with --dist loadgroup (the default)")
    assert request.node.nodeid.endswith("@scheduling"), request.node.nodeid
