"""What ``sse-fast loadgen`` counts, against real servers: only its own run's events (a
rerun on Nchan, which replays its buffer to new subscribers), a sequence that starts
again per stream (``--seq-per-stream``), and result lines that add up (published,
delivered, lost, not delivered nor lost, may have been published). Real processes:
loadgen's counts against real servers and Nchan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.foreign_apps import serve_foreign
from tests.support.nchan import nchan_server
from tests.support.thread_server import ThreadServer, running
from tests.tools.test_loadgen_any_server import loadgen

pytestmark = [
    pytest.mark.processes("loadgen's counts against real servers and Nchan"),
    # one of three lanes of the load tools' tests, which wait on timed runs most: xdist
    # hands the groups out first, so one worker runs the lane from the start beside the
    # CPU-heavy groups (tests/support/processes.py)
    pytest.mark.xdist_group("tools_any_server"),
]


def test_a_rerun_on_nchan_counts_only_its_own_events(tmp_path: Path) -> None:
    """The load-test page's Nchan command twice on the same Nchan, which keeps the first
    run's messages and sends them to every new subscriber (``nchan_subscriber_first_message
    oldest``, its default): the second run counts them apart and finds the same figures."""
    with nchan_server() as (base, _):
        runs = []
        for attempt in range(2):
            (tmp_path / str(attempt)).mkdir()
            code, output, result = loadgen(
                *("--url", f"{base}/sub/{{topic}}", "--publish-url", f"{base}/pub/{{topic}}"),
                *("--topic", "north", "--topic", "south"),
                *("--connections", "30", "--rate", "10"),
                tmp_path=tmp_path / str(attempt),
            )
            runs.append((code, output, result))
    for code, output, result in runs:
        assert code == 0, output
        assert result["duplicates"] == 0 and result["lost"] == 0, output
        assert result["delivered"] == result["expected"] > 0, output
        assert result["not_delivered_not_lost"] == 0
        # latency is this run's: never the age of the first run's messages
        assert result["p99_ms"] < 1000, output
    first, second = runs[0][2], runs[1][2]
    assert first["before_run"] == 0
    # every subscriber of the rerun got the first run's messages first, counted apart
    assert second["before_run"] >= 30 * first["published"] // 2, runs[1][1]
    assert re.search(r"before-run=\d+", runs[1][1])
    assert "counted apart" in runs[1][1]


@pytest.mark.parametrize("per_stream", [False, True], ids=["one-sequence", "seq-per-stream"])
def test_a_counter_that_starts_again_per_stream(per_stream: bool, tmp_path: Path) -> None:
    """A ticker numbers each stream's ticks from 1 and ends it after 8 (as a restart
    does); reconnected, the numbers start again: repeats, unless ``--seq-per-stream``."""
    with serve_foreign("ticker") as (base, _):
        code, output, result = loadgen(
            *("--url", f"{base}/ticks?end_after=8", "--no-publish", "--event", "tick"),
            *("--time-field", "ts", "--time-unit", "ms", "--seq-field", "n"),
            *("--source-field", "", "--reconnect-on-close", "--retry", "0.1"),
            *("--connections", "6", "--duration", "1.5"),
            *(["--seq-per-stream"] if per_stream else []),
            tmp_path=tmp_path,
        )
    # each stream ends every 0.4 s: 3 or more reconnects each in 1.5 s (and the warmup)
    assert result["reconnected_on_close"] >= 6 * 3, output
    assert result["delivered"] > 6 * 10 and result["lost"] == 0, output
    if per_stream:
        assert code == 0 and result["duplicates"] == 0, output
    else:  # the numbers the new stream starts with were seen before
        assert code == 1 and result["duplicates"] >= 6 * 8, output


class PubSub(ThreadServer):
    """A small pub/sub server on loopback: ``GET /sub/<topic>`` (an SSE stream) and
    ``POST /pub/<topic>`` (the body is the event's data; 201). Publish number
    ``silent_after`` + 1 and later are answered but sent to nobody (a server keeping its
    streams open and silent, as one may after a SIGTERM); publish number
    ``unanswered_at`` is sent, then its connection closed unanswered (a server killed
    with the answer in flight)."""

    def __init__(self, silent_after: int = 0, unanswered_at: int = 0) -> None:
        super().__init__()
        self.silent_after = silent_after
        self.unanswered_at = unanswered_at
        self.publishes = 0
        self.streams: dict[str, list[asyncio.StreamWriter]] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                method, path = head.split(" ", 2)[:2]
                topic = path.rsplit("/", 1)[-1]
                if method == "GET":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n"
                    )
                    self.streams.setdefault(topic, []).append(writer)
                    await reader.read()  # open until the client goes
                    return
                length = re.search(r"(?i)content-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                self.publishes += 1
                number = self.publishes
                if not self.silent_after or number <= self.silent_after:
                    frame = f"data: {body.decode()}\n\n"
                    chunk = f"{len(frame):x}\r\n{frame}\r\n".encode()
                    for stream in self.streams.get(topic, []):
                        stream.write(chunk)
                if number == self.unanswered_at:
                    return  # closed unanswered: the answer is lost
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()


def run_on(server: PubSub, tmp_path: Path) -> tuple[int, str, dict[str, Any]]:
    """10 subscribers of one topic, 20 publishes/s: about 16 before the window (the
    warmup and the half second to its start), 20 in it."""
    base = f"http://127.0.0.1:{server.port}"
    return loadgen(
        *("--url", f"{base}/sub/{{topic}}", "--publish-url", f"{base}/pub/{{topic}}"),
        *("--no-probe", "--connections", "10", "--rate", "20"),
        tmp_path=tmp_path,
    )


def adds_up(result: dict[str, Any]) -> bool:
    """Delivered (but those not expected) + lost + not delivered nor lost = expected."""
    return (
        result["delivered"]
        - result["delivered_unanswered"]
        + result["lost"]
        + result["not_delivered_not_lost"]
        == result["expected"]
    )


def test_streams_open_but_silent_are_named_on_the_line(tmp_path: Path) -> None:
    with running(PubSub(silent_after=22)) as server:
        code, output, result = run_on(server, tmp_path)
    assert code == 1, output
    assert result["lost"] == 0 and result["publish_unanswered"] == 0, output
    silent = result["not_delivered_not_lost"]
    assert 0 < silent < result["expected"] and adds_up(result), json.dumps(result)
    line = next(x for x in output.splitlines() if "delivered=" in x)
    assert f"not-delivered-not-lost={silent} " in line, line
    assert f"published={result['published']} " in line, line
    assert f"{silent} neither delivered nor lost" in output


def test_a_publish_whose_answer_was_lost_is_named_on_the_line(tmp_path: Path) -> None:
    with running(PubSub(unanswered_at=22)) as server:
        code, output, result = run_on(server, tmp_path)
    assert result["publish_unanswered"] == 1, output
    # the server took it: each subscriber got it, not expected, and it adds up
    assert result["delivered_unanswered"] == 10, json.dumps(result)
    assert result["delivered"] == result["expected"] + 10, json.dumps(result)
    assert result["lost"] == 0 and result["not_delivered_not_lost"] == 0
    assert adds_up(result)
    line = next(x for x in output.splitlines() if "delivered=" in x)
    assert "may-have-been-published=1 (delivered 10)" in line, line
    assert code == 1 and "got no answer" in output  # a publish failed
