"""pytest plugin loaded (``-p originals_check``) into every inner run of harness.py.

It is what keeps a broken harness from passing:

* before collection, it checks that the module under test resolves where it must: the
  shim (``shims/``) in a run against sse_fast, the installed original (right version,
  not the shim, not sse_fast) in a run against the original; a mismatch stops the run
  (``pytest.UsageError``, exit status 4);
* it deselects the tests the harness leaves out (exact node ids, the id without its
  ``[parameters]`` for every parametrization, or a class's or file's id for every test
  in it), and reports entries that matched nothing (a stale list);
* it marks the tests the harness names as deliberate differences (in a run against the
  shim; ids matched the same way) ``xfail(strict=True)`` with the difference as the
  reason (and ``raises``, a built-in exception's name, when given): such a test must
  fail (so), and one that passes fails the run; entries that matched nothing are
  reported too;
* it records every test's outcome by node id, which the harness compares with the
  JUnit XML it parses.

Configuration: the JSON file named by ``ORIGINALS_CHECK``; the report goes to the path
given there.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

_config: dict = {}
_report: dict = {
    "outcomes": {},
    "deselected": [],
    "unmatched_deselect": [],
    "xfailed": [],
    "unmatched_xfail": [],
    "collected": 0,
}
_RANK = {"passed": 0, "xfailed": 1, "skipped": 2, "error": 3, "failed": 4}


def _match(nodeid: str, wanted: dict | set) -> str | None:
    """The entry of ``wanted`` that names ``nodeid``: itself, it without its
    ``[parameters]``, or a class or file it is in; None if none does."""
    if nodeid in wanted:
        return nodeid
    parts = nodeid.split("[", 1)[0].split("::")
    for end in range(len(parts), 0, -1):
        prefix = "::".join(parts[:end])
        if prefix in wanted:
            return prefix
    return None


def _write() -> None:
    Path(_config["report"]).write_text(json.dumps(_report, indent=1))


def _check_module() -> None:
    module, target = _config["module"], _config["target"]
    spec = importlib.util.find_spec(module)
    origin = None if spec is None else spec.origin
    _report["module_file"] = origin
    if origin is None:
        raise pytest.UsageError(f"originals_check: {module} is not importable at all")
    shims = str(Path(_config["shims_dir"]).resolve())
    in_shims = str(Path(origin).resolve()).startswith(shims + os.sep)
    if target == "shim":
        if not in_shims:
            raise pytest.UsageError(
                f"originals_check: {module} resolves to {origin}, not to the shim under {shims}"
            )
        fast = importlib.util.find_spec("sse_fast")
        _report["sse_fast_file"] = None if fast is None else fast.origin
        expected_root = _config.get("sse_fast_root")
        if fast is None or fast.origin is None:
            return  # the run will show it: every test fails to import
        if expected_root and not str(Path(fast.origin).resolve()).startswith(
            str(Path(expected_root).resolve()) + os.sep
        ):
            raise pytest.UsageError(
                f"originals_check: sse_fast resolves to {fast.origin}, not under {expected_root}"
            )
    else:
        if in_shims or "sse_fast" in origin:
            raise pytest.UsageError(f"originals_check: {module} resolves to {origin}, a shim")
        mod = importlib.import_module(module)
        version = getattr(mod, "__version__", None)
        _report["module_version"] = version
        if version != _config["version"]:
            raise pytest.UsageError(
                f"originals_check: {module} {version} at {origin}, expected {_config['version']}"
            )


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get("ORIGINALS_CHECK")
    if not path:
        raise pytest.UsageError("originals_check: ORIGINALS_CHECK is not set")
    _config.update(json.loads(Path(path).read_text()))
    _report["sys_path_head"] = sys.path[:4]
    _check_module()
    _write()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = set(_config.get("deselect", []))
    used: set[str] = set()
    keep, drop = [], []
    for item in items:
        hit = _match(item.nodeid, wanted)
        if hit is None:
            keep.append(item)
        else:
            used.add(hit)
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    _report["deselected"] = [i.nodeid for i in drop]
    _report["unmatched_deselect"] = sorted(wanted - used)
    xfail: dict[str, dict] = _config.get("xfail", {})
    marked: set[str] = set()
    for item in items:
        hit = _match(item.nodeid, xfail)
        if hit is not None:
            marked.add(hit)
            raises = xfail[hit].get("raises")
            mark = pytest.mark.xfail(
                strict=True,
                reason=xfail[hit]["reason"],
                raises=getattr(builtins, raises) if raises else None,
            )
            item.add_marker(mark)
            _report["xfailed"].append(item.nodeid)
    _report["unmatched_xfail"] = sorted(set(xfail) - marked)
    _report["collected"] = len(keep)
    _write()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.passed:  # (an xfail(strict=True) that passed is reported as failed)
        outcome = "passed"
    elif report.skipped and hasattr(report, "wasxfail"):
        outcome = "xfailed"
    elif report.skipped:
        outcome = "skipped"
    elif report.when == "call":
        outcome = "failed"
    else:
        outcome = "error"
    previous = _report["outcomes"].get(report.nodeid)
    if previous is None or _RANK[outcome] > _RANK[previous]:
        _report["outcomes"][report.nodeid] = outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _report["exitstatus"] = int(exitstatus)
    _write()
