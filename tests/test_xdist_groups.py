"""``xdist_group`` keeps a group's tests on one worker (tests/support/xdist_groups.py).

The suite's own groups rest on it: the docs site is built once
(tests/e2e/test_docs_site.py), an original suite's run is reused
(tests/adapters/originals/), the wheel of the embedding examples is built by one
worker at a time (tests/e2e/test_embedding_installs.py). pytest 9.2 with
pytest-xdist 3.8 spread a group over every worker without a word; these fail if it
happens again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: a module of one group, one with a test in another group and tests in none, and a
#: conftest that logs where each test ran
MODULES = {
    "conftest.py": """
import os
import pytest


@pytest.fixture(autouse=True)
def logged(request):
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write(f"{request.node.nodeid} {os.environ['PYTEST_XDIST_WORKER']}\\n")
""",
    "test_together.py": """
import pytest

pytestmark = pytest.mark.xdist_group("together")


@pytest.mark.parametrize("n", range(6))
def test_grouped(n):
    pass
""",
    "test_apart.py": """
import pytest


@pytest.mark.parametrize("n", range(4))
@pytest.mark.xdist_group("apart")
def test_in_another_group(n):
    pass


@pytest.mark.parametrize("n", range(4))
def test_in_no_group(n):
    pass
""",
}


def test_a_groups_tests_run_on_one_worker_and_say_their_group(tmp_path: Path) -> None:
    """Two workers, two groups and tests in none: each group's tests on one worker,
    each with its ``@group`` id (what xdist's scheduler groups by)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for name, text in MODULES.items():
        (tmp_path / name).write_text(text)
    log = tmp_path / "ran.log"
    plugin = ["-p", "no:cacheprovider", "-p", "tests.support.xdist_groups"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugin, "-n", "2", "--dist", "loadgroup"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "RAN_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ran = [line.split() for line in log.read_text().splitlines()]
    assert len(ran) == 14, ran
    for group, tests in (("together", 6), ("apart", 4)):
        here = [(nodeid, worker) for nodeid, worker in ran if nodeid.endswith(f"@{group}")]
        assert len(here) == tests, f"the ids do not end in @{group}: {ran}"
        assert len({worker for _, worker in here}) == 1, f"{group} ran on several: {here}"


@pytest.mark.xdist_group("xdist-groups")
def test_this_runs_tests_carry_their_group(request: pytest.FixtureRequest) -> None:
    """In the suite's own run (``-n 4 --dist loadgroup`` from pyproject.toml), the
    plugin is registered: a grouped test's id names its group."""
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None or not request.config.getvalue("loadgroup"):
        pytest.skip("checks a run of several workers with --dist loadgroup (the default)")
    assert request.node.nodeid.endswith("@xdist-groups"), request.node.nodeid
