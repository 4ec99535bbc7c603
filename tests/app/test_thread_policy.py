"""``--scheduling`` (``sse_fast/_scheduling.py``): the policy set on the calling thread,
inherited by the threads it starts; what is said when the system has none or refuses
it. Each test sets it in a thread of its own, so the test process keeps its policy.
A real server's workers and their threads: ``tests/e2e/test_start.py``."""

from __future__ import annotations

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
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join()
    return out[0]


def _policy_here_and_in_a_thread_started_after(policy: str) -> tuple[str, int, int]:
    applied, said = apply_scheduling(policy)
    assert applied, said
    return said, os.sched_getscheduler(0), _in_a_thread(lambda: os.sched_getscheduler(0))


def test_batch_is_set_and_inherited_by_threads_started_after() -> None:
    before = os.sched_getscheduler(0)
    said, mine, child = _in_a_thread(lambda: _policy_here_and_in_a_thread_started_after("batch"))
    assert (mine, child) == (os.SCHED_BATCH, os.SCHED_BATCH)
    assert "SCHED_BATCH" in said and "--scheduling normal" in said
    assert os.sched_getscheduler(0) == before  # the test process's own thread: untouched


def test_normal_gives_the_kernels_default_back() -> None:
    def batch_then_normal() -> tuple[str, int, int]:
        apply_scheduling("batch")
        return _policy_here_and_in_a_thread_started_after("normal")

    said, mine, child = _in_a_thread(batch_then_normal)
    assert (mine, child) == (os.SCHED_OTHER, os.SCHED_OTHER)
    assert "SCHED_OTHER" in said


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="scheduling must be one of"):
        apply_scheduling("fifo")


def test_a_system_that_refuses_it_keeps_the_default_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(pid: int, policy: int, param: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    said, policy = _in_a_thread(lambda: (apply_scheduling("batch"), os.sched_getscheduler(0)))
    assert said == (
        False,
        "scheduling batch: refused here (Operation not permitted), the default kept",
    )
    assert policy != os.SCHED_BATCH


def test_a_system_without_policies_keeps_the_default_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "sched_setscheduler")
    said = apply_scheduling("batch")
    assert said == (False, "scheduling batch: not on this system (Linux only), the default kept")
