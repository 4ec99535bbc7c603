"""Run a vendored upstream test suite against the original library or against sse_fast.

``run_suite("sse_starlette", "original")`` runs sse-starlette 3.7.0's own tests (vendored
in ``sse_starlette_3_7_0/``) against the installed sse-starlette 3.7.0;
``run_suite("sse_starlette", "shim")`` runs the same tests with ``shims/`` first on
``PYTHONPATH``, where ``sse_starlette`` is a rename of ``sse_fast.starlette``. Same for
``"aiohttp_sse"`` (aiohttp-sse 3.0, ``sse_fast.aiohttp``).

Each run is a separate ``python -m pytest`` with the suite's own ini file (``-c``), so
none of the repository's pytest configuration (``-n 4``, ``filterwarnings = error``,
``--strict-markers``, ``-m 'not slow'``, its conftest.py) applies inside. The plugin
``_inner/originals_check.py`` checks, inside the run, that the module under test is the
shim or the original as asked (the run stops otherwise), applies the left-out list,
marks the suite's deliberate differences as strict expected failures in a run against
the shim (``xfail(strict=True)``: such a test must keep failing, and a pass fails the
run), and records each test's outcome, which is compared with the JUnit XML parsed here.

``python tests/adapters/originals/harness.py [suite] [original|shim] [--all]`` prints
a run's result; ``--all`` runs the left-out tests too (for information).

sse_fast is imported from where this process imports it (the checkout, or an installed
wheel), or from ``SSE_FAST_ROOT`` (a directory that holds the ``sse_fast`` package) when
that is set.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIMS = HERE / "shims"
INNER = HERE / "_inner"

#: a test's worst outcome wins when it has several reports (setup, call, teardown)
_RANK = {"passed": 0, "xfailed": 1, "skipped": 2, "error": 3, "failed": 4}

_PRIVATE = "tests a private internal of the original"
_WATCHER = (
    "tests the original's shutdown watcher (a task per thread polling AppStatus and"
    " uvicorn every 0.5 s, its per-thread state), which sse_fast replaces with a"
    " registry of open streams that a shutdown ends at once"
)


@dataclass(frozen=True)
class Suite:
    name: str
    directory: Path
    module: str  # the name the tests import
    version: str  # the original's __version__
    #: test files not run, with the reason
    left_out_files: dict[str, str]
    #: node ids not run (an id without [params] covers every parametrization, a class's
    #: or a file's id every test in it), with the reason
    left_out_tests: dict[str, str]
    #: node ids (as left_out_tests) that fail against sse_fast by design, with the
    #: difference: in a run against the shim they are xfail(strict=True), raising the
    #: named built-in exception when one is given ("ImportError")
    deliberate_differences: dict[str, str | tuple[str, str]] = field(default_factory=dict)
    #: test files that import names sse_fast does not have (the original's private
    #: internals), with the reason: run against both, they must fail to import
    #: against the shim (a collection error, checked by test_originals.py)
    import_differences: dict[str, str] = field(default_factory=dict)


SUITES: dict[str, Suite] = {
    "sse_starlette": Suite(
        name="sse_starlette",
        directory=HERE / "sse_starlette_3_7_0",
        module="sse_starlette",
        version="3.7.0",
        left_out_files={
            "tests/test_broadcasting_example.py": "tests upstream's example script"
            " examples/02_broadcasting.py (its MessageBroadcaster class), which the sdist"
            " does not ship: nothing of the library's API is under test",
        },
        left_out_tests={},
        deliberate_differences={
            "tests/test_sse.py::TestEventSourceResponse::"
            "test_ping_whenConcurrentWithEvents_thenRespectsLocking": "a ping due while an"
            " item's write is on its way goes out after it, never as a second send() at"
            " once (this test asserts the second send(): anyio.WouldBlock in its send)",
            "tests/test_issue152.py::TestIssue152WatcherLeak": (
                _WATCHER + ": each test imports _ensure_watcher_started_on_this_loop and"
                " _get_shutdown_state",
                "ImportError",
            ),
        },
        import_differences={
            "tests/test_issue132.py": _WATCHER
            + ": imports _get_shutdown_state, _get_uvicorn_server and _shutdown_watcher",
            "tests/test_multi_loop.py": _WATCHER + ": imports _get_shutdown_state",
        },
    ),
    "aiohttp_sse": Suite(
        name="aiohttp_sse",
        directory=HERE / "aiohttp_sse_3_0",
        module="aiohttp_sse",
        version="3.0",
        left_out_files={},
        left_out_tests={
            "tests/test_sse.py::TestPingInterval::test_constructor": _PRIVATE
            + ": reads response._ping_interval (aiohttp-sse 3.0 has no public accessor)",
            "tests/test_sse.py::TestPingInterval::test_default_value": _PRIVATE
            + ": reads response._ping_interval (aiohttp-sse 3.0 has no public accessor)",
            "tests/test_sse.py::test_ping_reset": _PRIVATE + ": asserts on response._ping_task",
            "tests/test_sse.py::test_ping_auto_close": _PRIVATE
            + ": asserts on response._ping_task",
            "tests/test_sse.py::test_abort_when_transport_already_gone": _PRIVATE
            + ": calls response._abort_transport() and _restore_tcp_user_timeout()",
        },
    ),
}


@dataclass
class SuiteResult:
    suite: str
    target: str  # "original" or "shim"
    returncode: int
    duration: float  # seconds, the subprocess's wall time
    outcomes: dict[str, str]  # node id -> passed / failed / error / skipped (from JUnit)
    messages: dict[str, str]  # node id -> the failure's or error's message (from JUnit)
    details: dict[str, str]  # node id -> the failure's or error's text (from JUnit)
    deselected: list[str]
    left_out_files: list[str]
    module_file: str | None
    sse_fast_file: str | None
    output: str = field(repr=False)
    #: tests that failed and then passed when run again alone (``RERUN_AT_MOST``)
    passed_on_rerun: list[str] = field(default_factory=list)

    def ids(self, outcome: str) -> list[str]:
        return sorted(i for i, o in self.outcomes.items() if o == outcome)

    @property
    def selected(self) -> int:
        return len(self.outcomes)

    @property
    def passed(self) -> int:
        return len(self.ids("passed"))

    @property
    def failed(self) -> int:
        return len(self.ids("failed"))

    @property
    def errors(self) -> int:
        return len(self.ids("error"))

    @property
    def skipped(self) -> int:
        return len(self.ids("skipped"))

    @property
    def xfailed(self) -> int:
        return len(self.ids("xfailed"))

    @property
    def failing(self) -> list[str]:
        return sorted(i for i, o in self.outcomes.items() if o in ("failed", "error"))

    def summary(self) -> str:
        return (
            f"{self.suite} against the {self.target}: {self.selected} selected, "
            f"{self.passed} passed, {self.failed} failed, {self.errors} errors, "
            f"{self.skipped} skipped, {self.xfailed} xfailed (strict), "
            f"{len(self.deselected)} left out "
            f"(+ {len(self.left_out_files)} files), {self.duration:.1f} s"
            + (
                f"; passed when run again: {', '.join(self.passed_on_rerun)}"
                if self.passed_on_rerun
                else ""
            )
        )


class HarnessError(RuntimeError):
    """The run itself went wrong (not a test's failure): never a pass."""


def _nodeid(case: ET.Element, directory: Path) -> str:
    """A JUnit (xunit1) test case's pytest node id."""
    name, classname, file = case.get("name", ""), case.get("classname", ""), case.get("file")
    if not classname or not file:  # a collection error: classname "", name the module
        return f"<collection>::{file or name}"
    module = file[: -len(".py")].replace("/", ".").replace(os.sep, ".")
    rest = classname[len(module) :].lstrip(".") if classname.startswith(module) else ""
    parts = [file.replace(os.sep, "/"), *(p for p in rest.split(".") if p), name]
    return "::".join(parts)


def _parse_junit(
    path: Path, directory: Path
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    details: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        nodeid = _nodeid(case, directory)
        outcome = "passed"
        for child in case:
            kind = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(child.tag)
            if kind is None:
                continue
            if kind == "skipped" and child.get("type") == "pytest.xfail":
                kind = "xfailed"
            if _RANK[kind] > _RANK[outcome]:
                outcome = kind
            if kind in ("failed", "error"):
                messages.setdefault(nodeid, child.get("message", ""))
                details[nodeid] = details.get(nodeid, "") + (child.text or "")
            elif kind in ("skipped", "xfailed"):
                messages.setdefault(nodeid, child.get("message", ""))
        previous = outcomes.get(nodeid)
        if previous is None or _RANK[outcome] > _RANK[previous]:
            outcomes[nodeid] = outcome
    return outcomes, messages, details


def sse_fast_root() -> Path:
    """Where the runs must import sse_fast from: ``SSE_FAST_ROOT``, else where this
    process imports it from (the checkout, or an installed wheel: .ci/sdist-check)."""
    if os.environ.get("SSE_FAST_ROOT"):
        return Path(os.environ["SSE_FAST_ROOT"]).resolve()
    import sse_fast

    return Path(sse_fast.__file__).resolve().parents[1]


def run_suite(
    name: str, target: str, *, include_left_out: bool = False, timeout: float = 900
) -> SuiteResult:
    """Run suite ``name`` against ``target`` ("original" or "shim") in a subprocess. A few
    failing tests (at most ``RERUN_AT_MOST``) are run once more, alone: the suites' own
    tests wait with fixed sleeps (aiohttp-sse's ``test_wait_stop_streaming`` gives its
    handler 0.1 s), which a loaded CI machine can overrun. One that passes then counts
    as passed and is named in the summary (``passed_on_rerun``); more failures than
    that are never run again."""
    result = _run_suite(name, target, include_left_out=include_left_out, timeout=timeout)
    failing = result.failing
    if failing and len(failing) <= RERUN_AT_MOST and not any("<collection>" in i for i in failing):
        again = _run_suite(name, target, only=failing, timeout=timeout)
        for nodeid in failing:
            if again.outcomes.get(nodeid) == "passed":
                result.outcomes[nodeid] = "passed"
                result.passed_on_rerun.append(nodeid)
    return result


#: failing tests of a run that are run once more (more than this: a real failure)
RERUN_AT_MOST = 2


def _run_suite(
    name: str,
    target: str,
    *,
    include_left_out: bool = False,
    timeout: float = 900,
    only: list[str] | None = None,
) -> SuiteResult:
    """One pytest run of suite ``name`` against ``target``; ``only``: these node ids."""
    if target not in ("original", "shim"):
        raise ValueError(f"target must be 'original' or 'shim', not {target!r}")
    suite = SUITES[name]
    with tempfile.TemporaryDirectory(prefix=f"originals-{name}-{target}-") as tmp:
        tmpdir = Path(tmp)
        junit, report, config = tmpdir / "junit.xml", tmpdir / "report.json", tmpdir / "check.json"
        # named tests alone: the left-out ones are not among them (nothing to deselect)
        deselect = [] if include_left_out or only else sorted(suite.left_out_tests)
        xfail = {}
        if target == "shim":
            for nodeid, difference in suite.deliberate_differences.items():
                if only and nodeid not in only:
                    continue
                reason, raises = difference if isinstance(difference, tuple) else (difference, None)
                xfail[nodeid] = {"reason": reason, "raises": raises}
        config.write_text(
            json.dumps(
                {
                    "module": suite.module,
                    "target": target,
                    "version": suite.version,
                    "shims_dir": str(SHIMS),
                    "sse_fast_root": str(sse_fast_root()),
                    "deselect": deselect,
                    "xfail": xfail,
                    "report": str(report),
                }
            )
        )
        ignores = [] if include_left_out else sorted(suite.left_out_files)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(suite.directory / "pytest.ini"),
            "--rootdir",
            str(suite.directory),
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-p",
            "no:randomly",
            "-p",
            "no:benchmark",  # (it would write .benchmarks/ into the vendored folder)
            "-p",
            "originals_check",
            "-o",
            "junit_family=xunit1",
            "-o",
            "timeout=60",  # pytest-timeout, when installed: a hung test cannot hang the run
            "--junitxml",
            str(junit),
            "-q",
            "-rfE",
            "--continue-on-collection-errors",  # a module that fails to import is counted
            *(f"--ignore={suite.directory / f}" for f in ignores),
            *(only or []),
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTEST_", "PYTHONPATH", "COV_CORE"))
        }
        paths = [str(INNER)]
        if target == "shim":
            paths = [str(SHIMS), str(INNER), str(sse_fast_root())]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["ORIGINALS_CHECK"] = str(config)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the vendored folders
        started = time.monotonic()
        try:
            proc = subprocess.run(
                command,
                cwd=suite.directory,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"{name} against the {target}: no result in {timeout} s") from exc
        duration = time.monotonic() - started
        output = proc.stdout
        if proc.returncode not in (0, 1):  # 2 interrupted, 3 internal error, 4 usage, 5 none
            raise HarnessError(
                f"{name} against the {target}: pytest exited {proc.returncode}\n{output[-6000:]}"
            )
        if not junit.exists() or not report.exists():
            raise HarnessError(f"{name} against the {target}: no JUnit XML or report\n{output}")
        checked = json.loads(report.read_text())
        outcomes, messages, details = _parse_junit(junit, suite.directory)
        if checked.get("unmatched_deselect"):
            raise HarnessError(f"left-out ids that match no test: {checked['unmatched_deselect']}")
        if checked.get("unmatched_xfail"):
            raise HarnessError(
                f"deliberate differences that match no test: {checked['unmatched_xfail']}"
            )
        # the plugin saw the same tests with the same outcomes (collection errors aside)
        seen = {k: v for k, v in outcomes.items() if not k.startswith("<collection>")}
        if seen != checked["outcomes"]:
            diff = set(seen.items()) ^ set(checked["outcomes"].items())
            raise HarnessError(f"JUnit XML and the in-run record disagree: {sorted(diff)[:10]}")
        return SuiteResult(
            suite=name,
            target=target,
            returncode=proc.returncode,
            duration=duration,
            outcomes=outcomes,
            messages=messages,
            details=details,
            deselected=checked["deselected"],
            left_out_files=ignores,
            module_file=checked.get("module_file"),
            sse_fast_file=checked.get("sse_fast_file"),
            output=output,
        )


@functools.cache
def original_run(name: str) -> SuiteResult:
    """The suite's run against the original, once per process (it is the reference)."""
    return run_suite(name, "original")


def pass_rate(shim: SuiteResult, original: SuiteResult) -> tuple[float, list[str]]:
    """The share of the tests the original runs that pass against sse_fast, and the ids
    that do not (failed, errored, skipped, or missing: a module that failed to import,
    a test that was not collected). The original's run is the denominator, so a test
    that vanishes from the run against the shim counts as a failure."""
    expected = set(original.outcomes)
    passed = {i for i in expected if shim.outcomes.get(i) == "passed"}
    return len(passed) / len(expected), sorted(expected - passed)


def _main(argv: list[str]) -> int:
    include = "--all" in argv
    args = [a for a in argv if a != "--all"]
    names = args[:1] or list(SUITES)
    targets = args[1:2] or ["original", "shim"]
    for name in names:
        for target in targets:
            result = run_suite(name, target, include_left_out=include)
            print(result.summary())
            print(f"  module: {result.module_file}  sse_fast: {result.sse_fast_file}")
            for nodeid in result.failing:
                print(f"  {result.outcomes[nodeid].upper():7} {nodeid}")
                print(f"          {result.messages.get(nodeid, '')[:300]!r}")
            for nodeid in result.ids("skipped"):
                print(f"  SKIPPED {nodeid}: {result.messages.get(nodeid, '')[:200]!r}")
            for nodeid in result.ids("xfailed"):
                print(f"  XFAIL   {nodeid}: {result.messages.get(nodeid, '')[:200]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
