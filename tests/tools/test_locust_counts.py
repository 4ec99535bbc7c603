"""What the locust users count, against real servers: only their own run's events (a
rerun on Nchan, which replays its buffer to new subscribers), and a summary that
names published, delivered, lost, not delivered nor lost, and may have been
published. Real processes: locust's counts against real servers and Nchan."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.nchan import nchan_server
from tests.support.thread_server import running
from tests.tools.test_loadgen_counts import PubSub
from tests.tools.test_locust_any_server import run_locust

pytestmark = [
    pytest.mark.processes("locust's counts against real servers and Nchan"),
    # one of three lanes of the load tools' tests, which wait on timed runs most: xdist
    # hands the groups out first, so one worker runs the lane from the start beside the
    # CPU-heavy groups (tests/support/processes.py)
    pytest.mark.xdist_group("tools_loadgen"),
]


def summary(stderr: str) -> str:
    found = re.search(r"SSE summary: (.*)", stderr)
    assert found, stderr[-3000:]
    return found.group(1)


def test_a_rerun_on_nchan_counts_only_its_own_events(tmp_path: Path) -> None:
    """The load-test page's locust command twice on the same Nchan and topic: the
    second run gets the first run's messages first (Nchan's default), counted apart,
    never as latency (their age: seconds)."""
    with nchan_server() as (base, _):
        runs = []
        for attempt in range(2):
            (tmp_path / str(attempt)).mkdir()
            runs.append(
                run_locust(
                    tmp_path / str(attempt),
                    base,
                    *("--sse-url", "/sub/{topic}", "--sse-publish-url", "/pub/{topic}"),
                    *("-u", "4", "-r", "4", "-t", "4s", "--publish-rate", "10"),
                )
            )
    for run in runs:
        assert run.status == 0, run.stderr[-3000:]
        assert run.count("lost") == 0 and run.count("duplicate") == 0, run.rows
        assert run.count("event") >= 3 * 15, run.rows
        # the first run's messages are 4 s old or more when the second begins
        assert float(run.rows[("SSE", "event")]["99%"]) < 2000, run.rows
    assert runs[0].count("sent before this run") == 0
    assert runs[1].count("sent before this run") >= 3 * 15, runs[1].rows
    assert "sent before this run" in summary(runs[1].stderr)


def test_the_summary_names_what_was_neither_delivered_nor_lost(tmp_path: Path) -> None:
    """A server that answers every publish but, after the 20th, sends them to nobody
    (streams open but silent), and loses the answer of the 5th."""
    with running(PubSub(silent_after=20, unanswered_at=5)) as server:
        run = run_locust(
            tmp_path,
            f"http://127.0.0.1:{server.port}",
            *("--sse-url", "/sub/{topic}", "--sse-publish-url", "/pub/{topic}"),
            *("-u", "4", "-r", "4", "-t", "4s", "--publish-rate", "10"),
        )
        published = server.publishes
    said = summary(run.stderr)
    confirmed = int(re.search(r"published (\d+)", said).group(1))  # type: ignore[union-attr]
    silent = int(re.search(r"not delivered, not lost (\d+)", said).group(1))  # type: ignore[union-attr]
    assert 20 < confirmed < published, said
    # each of the 3 subscribers saw up to number 19 or so (the 5th was resent): the rest
    assert 3 * (confirmed - 21) <= silent <= 3 * (confirmed - 18), said
    assert "may have been published 1," in said, said
    assert run.count("lost") == 0, run.rows
