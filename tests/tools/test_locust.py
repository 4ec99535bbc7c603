"""``sse_fast.locust``: the users import from the package, and a user's own
locustfile made of them runs headless against a real server with every event
accounted for. Real processes: locust headless against a real server."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from sse_fast.testing import ServerProcess

pytestmark = [
    pytest.mark.processes("locust headless against a real server"),
    # one of three lanes of the load tools' tests, which wait on timed runs most: xdist
    # hands the groups out first, so one worker runs the lane from the start beside the
    # CPU-heavy groups (tests/support/processes.py)
    pytest.mark.xdist_group("tools_loadgen"),
]


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
    [
        [],
        ["--sse-topic", "user/*", "--sse-publish-topic", "user/1"],
        ["--sse-compressed", "zstd"],
    ],
    ids=["by-name", "by-pattern", "compressed"],
)
def test_a_users_locustfile_runs_headless_and_loses_nothing(
    tmp_path: Path, topics: list[str]
) -> None:
    """Subscribers and a publisher on one topic; or (``by-pattern``) subscribers of
    ``user/*`` and a publisher of ``user/1``; or (``compressed``) streams that ask for
    zstd, decoded as they come: every event reaches every stream."""
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


#: read_come_back on made-up responses (a layout read_chunks falls back on): each case's
#: headers, body pieces (an exception: the body breaks there), and what it must return
COME_BACK_CASES = """
from sse_fast.locust._subscriber import StreamError, read_come_back

FRAME = (
    b"retry: 5200\\nevent: sse-fast-disconnect\\n"
    b'data: {"reason": "max-connections", "message": "full"}\\n\\n'
)


class Response:
    def __init__(self, headers, pieces):
        self.headers, self.pieces = headers, pieces

    def iter_content(self, chunk_size, decode_content):
        for piece in self.pieces:
            if isinstance(piece, Exception):
                raise piece
            yield piece


def told(headers, *pieces):
    return read_come_back(Response(headers, pieces))


assert told({"content-type": "text/event-stream"}, FRAME) is None  # a stream
assert told({"SSE-Fast-Come-Back": "max-connections"}, FRAME[:9], FRAME[9:]) == (
    "max-connections", "full", 5200)
# the header twice: the last one says it (the frame, here none, would say it first)
assert told({"SSE-Fast-Come-Back": ["starting", "draining"]}) == ("draining", "", None)
# cut short after the retry, before the frame: the header's reason, the retry kept
assert told({"SSE-Fast-Come-Back": "starting"}, FRAME[:12], StreamError("closed")) == (
    "starting", "", 5200)
# cut in the middle of the frame, or a body that is no SSE at all: no exception
assert told({"SSE-Fast-Come-Back": "starting"}, FRAME[:40], OSError("reset"))[0] == "starting"
assert told({"SSE-Fast-Come-Back": "draining"}, b"\\xff\\x00garbage", ValueError("bad chunk"))[
    0] == "draining"
print("ok")
"""


def test_a_come_back_is_read_whole_cut_short_or_garbled() -> None:
    """``read_come_back``: the reason, message and retry of a whole come-back; the
    header's reason when the body breaks at its start, in its middle, or is garbage
    (never an exception into the user's task); a repeated header's last value."""
    done = subprocess.run(
        [sys.executable, "-c", COME_BACK_CASES], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
