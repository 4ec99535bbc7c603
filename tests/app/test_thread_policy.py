"""``--scheduling`` (``sse_fast/_scheduling.py``): SCHED_BATCH set on the calling thread
in place of the kernel's default and inherited by the threads it starts; a policy the
operator chose kept; ``normal`` changing nothing; what is said when the system refuses
it or has none. Every call runs in a thread of its own, so the test process keeps its
policy. A real server's workers and their threads: ``tests/e2e/test_start.py``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sse_fast._scheduling import apply_scheduling

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH"), reason="scheduling policies are Linux's"
)


def _in_a_thread(work: Callable[[], Any]) -> Any:
    """``work()``'s result, run in a new thread (its policy is its own)."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


def _applied_from(start: int, policy: str) -> tuple[tuple[int, str], int, int]:
    """From a thread under ``start``: what ``apply_scheduling(policy)`` said, the thread's
    policy after it, and that of a thread it starts after it."""

    def work() -> tuple[tuple[int, str], int, int]:
        os.sched_setscheduler(0, start, os.sched_param(0))
        said = apply_scheduling(policy)
        return said, os.sched_getscheduler(0), _in_a_thread(lambda: os.sched_getscheduler(0))

    return _in_a_thread(work)  # type: ignore[no-any-return]


def test_batch_replaces_the_default_and_threads_started_after_inherit_it() -> None:
    before = os.sched_getscheduler(0)
    said, mine, child = _applied_from(os.SCHED_OTHER, "batch")
    assert (mine, child) == (os.SCHED_BATCH, os.SCHED_BATCH)
    assert said == (
        logging.INFO,
        "threads scheduled as SCHED_BATCH (--scheduling normal: as started)",
    )
    assert os.sched_getscheduler(0) == before  # the test process's own thread: untouched


def test_a_policy_the_operator_chose_is_kept() -> None:
    said, mine, child = _applied_from(os.SCHED_IDLE, "batch")
    assert (mine, child) == (os.SCHED_IDLE, os.SCHED_IDLE)
    assert said == (
        logging.INFO,
        "threads scheduled as SCHED_IDLE, as started: kept (not SCHED_BATCH)",
    )


@pytest.mark.parametrize("start", ["SCHED_OTHER", "SCHED_BATCH"])
def test_normal_changes_nothing(start: str) -> None:
    said, mine, child = _applied_from(getattr(os, start), "normal")
    assert (mine, child) == (getattr(os, start), getattr(os, start))
    assert said == (logging.INFO, f"threads scheduled as {start}, as started (--scheduling normal)")


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="scheduling must be one of"):
        _in_a_thread(lambda: apply_scheduling("fifo"))


def test_a_system_that_refuses_it_keeps_the_policy_and_warns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(pid: int, policy: int, param: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    real = os.sched_setscheduler

    def work() -> tuple[tuple[int, str], int]:
        real(0, os.SCHED_OTHER, os.sched_param(0))  # the kernel's default, as serve finds it
        monkeypatch.setattr(os, "sched_setscheduler", refuse)
        return apply_scheduling("batch"), os.sched_getscheduler(0)

    said, policy = _in_a_thread(work)
    assert said == (
        logging.WARNING,
        "scheduling batch: refused here (Operation not permitted); threads stay SCHED_OTHER",
    )
    assert policy == os.SCHED_OTHER


def test_a_system_without_policies_says_so_without_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "sched_setscheduler")
    said = _in_a_thread(lambda: apply_scheduling("batch"))
    assert said == (logging.INFO, "scheduling batch: this system has no policies (Linux only)")
