"""Tests marked ``alone`` run while no other test does (tests/conftest.py registers this).

They measure the event loop's own timing (the pacer's load, chunks per timer tick,
a p99 under attack), which other tests' load on two cores would change. Under
pytest-xdist, every test holds a shared lock on one file for the session's workers,
an ``alone`` test the exclusive one; a turnstile keeps a waiting ``alone`` test from
being starved by the others' shared locks.

An exclusive hold costs a drain: the other workers finish the tests they are in, then
wait. Taken per test, the eight ``alone`` tests spread over the workers cost eight
drains, each as long as the longest test running beside them. So they are one xdist
group, ``alone`` (one worker runs them one after the other; the scheduler hands the
groups out first, at the session's start), and that worker keeps the exclusive hold
from the first of them to the last: one drain a session. With one process (``-n 0``)
nothing runs beside a test and no lock is taken. tests/test_scheduling.py checks it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["alone_if_marked", "pytest_collection_modifyitems", "pytest_runtest_protocol"]

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


@pytest.hookimpl(tryfirst=True)  # before xdist_groups.py turns the marks into ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``alone`` tests are one xdist group."""
    for item in items:
        if _alone(item):
            item.add_marker(pytest.mark.xdist_group("alone"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After an ``alone`` test whose next test is not one (or that is the last), the
    worker lets the others in again."""
    try:
        return (yield)
    finally:
        if _HOLD in item.config.stash and not _alone(nextitem):
            item.config.stash[_HOLD].close()
            del item.config.stash[_HOLD]


@pytest.fixture(autouse=True)
def alone_if_marked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A test runs under the shared lock, an ``alone`` one under the exclusive hold,
    taken by the first of a run of them."""
    config = request.config
    if not hasattr(config, "workerinput"):  # one process: nothing runs beside it
        yield
        return
    directory = tmp_path_factory.getbasetemp().parent  # shared by the session's workers
    turnstile, room = directory / "alone.turnstile", directory / "alone.lock"
    if not _alone(request.node):
        with _flock(turnstile, fcntl.LOCK_EX):
            pass
        with _flock(room, fcntl.LOCK_SH):
            yield
        return
    if _HOLD not in config.stash:  # the first of a run: wait for the others to finish
        hold = contextlib.ExitStack()
        hold.enter_context(_flock(turnstile, fcntl.LOCK_EX))
        hold.enter_context(_flock(room, fcntl.LOCK_EX))
        config.stash[_HOLD] = hold
    yield
