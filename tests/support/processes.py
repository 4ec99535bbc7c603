"""Which tests start real programs, and the twins' run (tests/conftest.py registers this).

Most of the suite checks logic in the test's own process (the ASGI harness, fake
clocks). A test that starts a program (``sse-fast serve``, ``redis-server``, a
browser, a proxy, a nested pytest, a fresh venv's pip) does it for what only a real
process proves: signals, restarts, workers, sockets and kernel limits, third-party
servers and clients, install lines. Such tests are in files marked
``processes("what only the processes prove")``, the module docstring saying it too:

* a test that starts a program from a file without that mark fails (its teardown
  says which program): the process layer is known, not guessed. Any start counts,
  through ``subprocess`` (``asyncio``'s too) or ``multiprocessing`` (``spawn``,
  ``forkserver``): they end in ``_posixsubprocess.fork_exec`` (or
  ``os.posix_spawn``), watched here; a ``fork()`` without exec is not a program;
* the twins' run (``SSE_FAST_NO_EXTENSIONS=1``) leaves such files out unless they
  are marked ``twins`` too: what a real process proves (a signal, a restart, a
  proxy in front) is not the core's, and the twins' behaviour is every in-process
  test's subject, run in that mode whole. The files marked ``twins`` prove that a
  real server runs on them: their ``sse-fast serve`` processes run the twins.

``SSE_FAST_TESTS_TWINS_EVERYWHERE=1`` keeps every process-starting test in the twins'
run (as the suite ran them before: twice the time, for a release or a doubt).

``SSE_FAST_TESTS_PROCESS_REPORT=FILE`` makes a run a survey instead: each test's id,
whether it is marked, the programs it started, the CPU seconds it used (its
worker's and the children's it waited for), its xdist worker and when it began and
ended (wall clock, up to its teardown's start) are appended to FILE (tab separated),
and nothing fails for it.
"""

from __future__ import annotations

import _posixsubprocess
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = [
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_protocol",
    "pytest_runtest_teardown",
]

_started: list[str] = []  # the programs the running test started
_CPU = pytest.StashKey[float]()  # CPU seconds used so far when the test began
_BEGAN = pytest.StashKey[float]()  # the wall clock when the test began


def _cpu() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_watching = False


def _program(args: Any) -> str:
    try:
        return os.fsdecode(args[0]) if args else "?"
    except (TypeError, IndexError):
        return "?"


def pytest_configure(config: pytest.Config) -> None:
    """Watch every program the session's process starts."""
    global _watching
    if _watching:
        return
    _watching = True
    fork_exec = _posixsubprocess.fork_exec
    posix_spawn = os.posix_spawn

    def watched(args: Any, *rest: Any) -> int:
        _started.append(_program(args))
        return int(fork_exec(args, *rest))

    def spawned(path: Any, argv: Any, *rest: Any, **options: Any) -> int:
        _started.append(_program(argv) if argv else os.fsdecode(path))
        return posix_spawn(path, argv, *rest, **options)

    _posixsubprocess.fork_exec = watched  # multiprocessing's spawn
    subprocess._fork_exec = watched  # type: ignore[attr-defined]  # imported by name
    os.posix_spawn = spawned  # subprocess's other way, where it may use it


def _is_process_test(item: pytest.Item) -> bool:
    return item.get_closest_marker("processes") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``processes`` mark must say what the processes prove; in the twins' run,
    leave out the process-starting files not marked ``twins``; the process-starting
    tests first (``_long_first``)."""
    for item in items:
        mark = item.get_closest_marker("processes")
        if mark is not None and not (mark.args and str(mark.args[0]).strip()):
            raise pytest.UsageError(
                f"{item.nodeid}: processes() needs a phrase saying what only real "
                "processes prove there"
            )
    import sse_fast

    if sse_fast.NO_EXTENSIONS and not os.environ.get("SSE_FAST_TESTS_TWINS_EVERYWHERE"):
        left = [i for i in items if _is_process_test(i) and i.get_closest_marker("twins") is None]
        if left:
            gone = set(map(id, left))
            config.hook.pytest_deselected(items=left)
            items[:] = [i for i in items if id(i) not in gone]
    _long_first(items)


def _long_first(items: list[pytest.Item]) -> None:
    """The process-starting tests first, then the in-process ones; each part in its
    own order.

    pytest-xdist hands a worker its next unit as it finishes one: the ``xdist_group``
    units first (each whole, the largest first), then the rest, a test at a time, in
    the order collected. A process-starting test takes seconds to tens of seconds, an
    in-process one milliseconds mostly: the in-process ones fill every worker while
    the last long ones end. The load tools' tests wait on timed runs most (their CPU
    a fifth of their time, against a quarter to a third for the others'): handed out
    after the groups, they ran on every worker at once near the end, 20 s and more at
    40 to 65 % of the two cores (sampled from /proc/stat). So their modules are three
    groups of their own (``tools_locust``, ``tools_loadgen``, ``tools_any_server``,
    about 100 s each), which three workers take from the start, beside the CPU-heavy
    groups. A module whose tests are of both kinds is split, which costs nothing:
    under xdist a worker goes from module to module anyway."""
    items.sort(key=lambda item: not _is_process_test(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Count the programs each test starts (its fixtures' included)."""
    _started.clear()
    item.stash[_CPU] = _cpu()
    item.stash[_BEGAN] = time.time()
    try:
        return (yield)
    finally:
        _started.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Fail a test that started a program from a file not marked ``processes``."""
    result = yield
    report = os.environ.get("SSE_FAST_TESTS_PROCESS_REPORT")
    if report:  # a survey: each test, its mark and what it started; nothing fails
        marked = int(_is_process_test(item))
        cpu = _cpu() - item.stash.get(_CPU, 0.0)
        began, worker = item.stash.get(_BEGAN, 0.0), os.environ.get("PYTEST_XDIST_WORKER", "-")
        programs = " ".join(sorted(set(_started)))
        with open(report, "a") as f:
            f.write(
                f"{item.nodeid}\t{marked}\t{programs}\t{cpu:.2f}\t{worker}\t{began:.3f}"
                f"\t{time.time():.3f}\n"
            )
        _started.clear()
    if _started and not _is_process_test(item):
        programs = ", ".join(sorted(set(_started)))
        _started.clear()
        pytest.fail(
            f"started {programs} from a file not marked processes(...): move the check "
            "in process (tests/support/asgi_harness.py), or mark the module "
            '`pytestmark = pytest.mark.processes("what only the processes prove")`',
            pytrace=False,
        )
    return result
