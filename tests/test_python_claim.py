"""The Python versions the package claims are said alike everywhere, and CI tests the
oldest and the newest of them.

The claim lives in pyproject.toml's classifiers (``Programming Language :: Python ::
3.X``), which ``.ci/pythons`` reads to choose the versions it tests; ``requires-python``
starts at the oldest, mypy and ruff check against the oldest, and the README and getting
started say the same range."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "Programming Language :: Python :: 3."


def _claimed() -> list[int]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minors = sorted(
        int(c.removeprefix(PREFIX)) for c in project.get("classifiers", []) if c.startswith(PREFIX)
    )
    assert minors, "pyproject.toml: list the Python versions claimed as classifiers"
    return minors


def test_the_claimed_versions_are_a_range_that_requires_python_starts() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minors = _claimed()
    assert minors == list(range(minors[0], minors[-1] + 1)), f"a gap in 3.{minors}"
    assert config["project"]["requires-python"] == f">=3.{minors[0]}"
    assert config["tool"]["mypy"]["python_version"] == f"3.{minors[0]}"
    # ruff's pyupgrade rules (UP) then flag what is kept for older Pythons
    assert config["tool"]["ruff"]["target-version"] == f"py3{minors[0]}"


def test_the_readme_and_getting_started_say_the_claimed_versions() -> None:
    minors = _claimed()
    said = f"Python 3.{minors[0]} to 3.{minors[-1]}"
    for page in ("README.md", "docs/getting-started.md"):
        text = " ".join((ROOT / page).read_text().split())
        assert said in text, f"{page}: say {said!r}"
        other = set(re.findall(r"Python 3\.\d+ (?:or later|and later|\+)", text))
        assert not other, f"{page}: {other} says otherwise than {said!r}"


def test_ci_tests_the_oldest_and_the_newest_claimed() -> None:
    run = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "bash .ci/sdist-check nice -n 10 bash .ci/beside" in run, ".ci/run: run .ci/beside"
    beside = (ROOT / ".ci" / "beside").read_text().splitlines()
    assert "bash .ci/pythons -n 2" in beside, ".ci/beside must run .ci/pythons"
    pythons = (ROOT / ".ci" / "pythons").read_text()
    assert "classifiers" in pythons and '"$oldest" "$newest"' in pythons
