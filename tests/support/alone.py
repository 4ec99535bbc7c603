"""Tests marked ``alone`` run while no other test does (tests/conftest.py registers this).

They measure the machine's timing (a real server's saturated loop and its chunks per
timer tick, a p99 under attack, the exit of four workers stopped mid-restore), which
other tests' load on two cores would change (timing logic alone runs on a clock of
the test's instead: tests/support/virtual_time.py). Under pytest-xdist, every test
holds a shared lock on one file for the session's workers, an ``alone`` test the
exclusive one; a turnstile keeps a waiting ``alone`` test from being starved by the
others' shared locks.

A hold covers a test's whole run: its setup, body and teardown, and so the setup and
teardown of the module- and session-scoped fixtures that happen in them (a docs site's
build, an original suite's run, a nested pytest session): such work is a test's load
as much as its body is, and it ran beside the ``alone`` tests while the lock was taken
by a function-scoped fixture, which pytest sets up after the wider ones.

An exclusive hold costs a drain: the other workers finish the tests they are in, then
wait. Taken per test, the seven ``alone`` tests spread over the workers cost seven
drains, each as long as the longest test running beside them. So they are one xdist
group, ``alone`` (one worker runs them one after the other; the scheduler hands the
groups out first, at the session's start), and that worker keeps the exclusive hold
from the first of them to the last: one drain a session. (An ``alone`` test in a
module of a group of its own is in the group xdist names after both, ``alone_restart``
for tests/e2e/test_start.py: one drain more when a plain ``pytest`` runs them.
scripts/test runs them all in a pass of their own, before the rest, with no drain.)
With one process (``-n 0``) nothing runs beside a test and no lock is taken, unless
``SSE_FAST_TESTS_LOCKS`` names a directory another session shares (scripts/test runs
its two modes at once: the locks keep an ``alone`` test of either alone in both).
tests/test_scheduling.py checks it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_runtest_protocol",
]

#: the worker's exclusive hold (turnstile and room), kept while its alone tests follow
#: one another; absent while it holds nothing
_HOLD = pytest.StashKey[contextlib.ExitStack]()


def _alone(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


@contextlib.contextmanager
def _flock(path: Path, how: int) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, how)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: the session's ``SSE_FAST_TESTS_LOCKS`` and ``SSE_FAST_TESTS_ALONE`` ("": not set)
_SETTINGS = pytest.StashKey[dict[str, str]]()
_NAMES = ("SSE_FAST_TESTS_LOCKS", "SSE_FAST_TESTS_ALONE")


def pytest_configure(config: pytest.Config) -> None:
    """Take ``SSE_FAST_TESTS_LOCKS`` and ``SSE_FAST_TESTS_ALONE`` out of the environment
    (the session's workers are given them by ``pytest_configure_node``): a nested
    session a test starts (tests/test_scheduling.py) must neither share the locks of
    the one it runs in, whose test holds them while it waits for it, nor leave out its
    own ``alone`` tests."""
    if hasattr(config, "workerinput"):
        config.stash[_SETTINGS] = dict(config.workerinput.get("sse_fast_tests_alone", {}))
    else:
        config.stash[_SETTINGS] = {name: os.environ.pop(name, "") for name in _NAMES}


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Each xdist worker has its session's settings."""
    node.workerinput["sse_fast_tests_alone"] = node.config.stash.get(_SETTINGS, {})


def _setting(config: pytest.Config, name: str) -> str:
    return config.stash.get(_SETTINGS, {}).get(name, "")


def _shared(config: pytest.Config) -> str:
    return _setting(config, "SSE_FAST_TESTS_LOCKS")


def _directory(config: pytest.Config) -> Path:
    """Where the session's workers keep the lock files: ``SSE_FAST_TESTS_LOCKS`` when
    set (a directory two sessions share: scripts/test runs both modes at once, and an
    ``alone`` test of either keeps the other's tests out too), else beside their
    temporary directories (xdist gives each worker ``<the session's
    basetemp>/popen-gwN``), else one named after the session's run id."""
    if _shared(config):
        return Path(_shared(config))
    if config.option.basetemp:
        return Path(config.option.basetemp).parent
    where = Path(tempfile.gettempdir(), f"pytest-alone-{config.workerinput['testrunuid']}")
    where.mkdir(exist_ok=True)
    return where


@pytest.hookimpl(tryfirst=True)  # before xdist turns the marks into ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``alone`` tests are one xdist group. ``SSE_FAST_TESTS_ALONE=only`` keeps
    only them, ``=skip`` leaves them out: scripts/test runs them first, in one process
    while nothing else runs, then the rest (no drain of the other workers to wait)."""
    for item in items:
        if _alone(item):
            item.add_marker(pytest.mark.xdist_group("alone"))
    which = _setting(config, "SSE_FAST_TESTS_ALONE")
    if which not in ("", "only", "skip"):
        raise pytest.UsageError(f"SSE_FAST_TESTS_ALONE={which!r}: give only or skip")
    if which:
        gone = [item for item in items if _alone(item) == (which == "skip")]
        if gone:
            config.hook.pytest_deselected(items=gone)
            items[:] = [item for item in items if _alone(item) != (which == "skip")]


def _keeps_hold(config: pytest.Config) -> bool:
    """Whether a worker keeps the exclusive hold from one ``alone`` test to the next:
    under ``--dist loadgroup`` (the suite's), where they are one group and the worker
    that holds it is sent the rest or its shutdown as soon as the queue is empty. Under
    ``--dist load`` a worker waiting for its next test with the hold would wait for
    workers that wait for it."""
    return bool(config.getvalue("loadgroup"))  # a worker sees dist "no", and this


# tryfirst: outside pytest-timeout's wrapper. A wait for the lock is bounded by the
# tests that hold it (each under its own timeout); a timeout raised in this wrapper,
# before the test's own reports, would end the worker's session with no test named
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A test runs under the shared lock; an ``alone`` one under the exclusive hold,
    taken by the first of a run of them and let go after the last."""
    config = item.config
    if not hasattr(config, "workerinput") and not _shared(config):
        return (yield)  # one process, one session: nothing runs beside it
    directory = _directory(config)
    turnstile, room = directory / "alone.turnstile", directory / "alone.lock"
    if not _alone(item):
        with _flock(turnstile, fcntl.LOCK_EX):
            pass
        with _flock(room, fcntl.LOCK_SH):
            return (yield)
    if _HOLD not in config.stash:  # the first of a run: wait for the others to finish
        with contextlib.ExitStack() as taking:  # half taken, it is let go
            taking.enter_context(_flock(turnstile, fcntl.LOCK_EX))
            taking.enter_context(_flock(room, fcntl.LOCK_EX))
            config.stash[_HOLD] = taking.pop_all()
    try:
        return (yield)
    finally:
        if not _alone(nextitem) or not _keeps_hold(config):
            hold = config.stash[_HOLD]
            del config.stash[_HOLD]  # first: a hold that failed to close is not kept
            hold.close()
