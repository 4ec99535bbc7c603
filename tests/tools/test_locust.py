"""``sse_fast.locust``: the users import from the package, and a user's own
locustfile made of them runs headless against a real server with every event
accounted for."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from sse_fast.testing import ServerProcess


def test_the_users_import_from_the_package() -> None:
    # in a process of its own: importing locust monkey-patches the process (gevent)
    program = (
        "from locust import FastHttpUser\n"
        "from sse_fast.locust import PublisherUser, SSEUser\n"
        "assert issubclass(SSEUser, FastHttpUser) and issubclass(PublisherUser, FastHttpUser)\n"
        "assert PublisherUser.fixed_count == 1\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize(
    "topics",
    [[], ["--sse-topic", "user/*", "--sse-publish-topic", "user/1"]],
    ids=["by-name", "by-pattern"],
)
def test_a_users_locustfile_runs_headless_and_loses_nothing(
    tmp_path: Path, topics: list[str]
) -> None:
    """Subscribers and a publisher on one topic; or (``by-pattern``) subscribers of
    ``user/*`` and a publisher of ``user/1``: every event reaches every stream."""
    locustfile = tmp_path / "my_locustfile.py"
    locustfile.write_text("from sse_fast.locust import PublisherUser, SSEUser  # noqa: F401\n")
    with ServerProcess() as server:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(locustfile),
                "SSEUser",
                "PublisherUser",
                "--headless",
                "-u",
                "6",
                "-r",
                "6",
                "-t",
                "6s",
                "--publish-rate",
                "5",
                "--host",
                f"http://127.0.0.1:{server.port}",
                "--csv",
                str(tmp_path / "run"),
                *topics,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "run_stats.csv") as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    events = rows[("SSE", "event")]
    assert int(events["Request Count"]) >= 5 * 10, events  # 5 streams, ~5/s for seconds
    assert events["Failure Count"] == "0"
    for name in ("lost", "duplicate", "sse-fast-missed"):
        assert rows[("SSE", name)]["Request Count"] == "0", rows[("SSE", name)]
    publishes = rows[("POST", "/publish")]
    assert int(publishes["Request Count"]) >= 10 and publishes["Failure Count"] == "0"
