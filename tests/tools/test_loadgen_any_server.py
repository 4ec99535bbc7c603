"""``sse-fast loadgen`` against SSE servers that are not ours, as the docs write the
command: an sse-starlette chat app (and the same app on our drop-in), a server that
publishes by itself, Nchan, a publish command; the flags it refuses; the server's
processes found by port; a loss the server really causes, across browser-like
reconnects. Real processes: the command as typed, its client processes, and servers that
are not ours; the stamps' reader and the options' refusals in process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sse_fast.loadgen import LoadOptions
from sse_fast.loadgen._procfs import listening_pids, process_tree
from sse_fast.loadtarget import Stamp, Stamps
from sse_fast.testing import ServerProcess, free_port
from tests.support.foreign_apps import serve_foreign
from tests.support.nchan import nchan_server
from tests.support.thread_server import ThreadServer, running
from tests.support.waiting import until

# one of three lanes of the load tools' tests, which wait on timed runs most: xdist
# hands the groups out first, so one worker runs the lane from the start beside the
# CPU-heavy groups (tests/support/processes.py)
pytestmark = pytest.mark.xdist_group("tools_any_server")

SSE_FAST = os.path.join(os.path.dirname(sys.executable), "sse-fast")
#: a short run: one client process, one source address
SHORT = [
    "--processes",
    "1",
    "--sources",
    "1",
    "--duration",
    "1",
    "--warmup",
    "0.3",
    "--drain",
    "0.3",
]


#: the tests that run loadgen or a server
LOADGEN = pytest.mark.processes("loadgen as typed, its processes, and servers that are not ours")


def loadgen(*args: str, tmp_path: Path) -> tuple[int, str, dict[str, Any]]:
    """Run ``sse-fast loadgen ARGS``; (exit status, stdout + stderr, its --json)."""
    out = tmp_path / "result.json"
    done = subprocess.run(
        [SSE_FAST, "loadgen", *SHORT, *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = json.loads(out.read_text()) if out.exists() else {}
    return done.returncode, done.stdout + done.stderr, result


def chat_flags(base: str) -> list[str]:
    """The docs' command for the chat app (sse-starlette)."""
    return [
        "--url",
        f"{base}/rooms/{{topic}}/stream",
        "--header",
        "Authorization: Bearer user-{user}",
        "--publish-url",
        f"{base}/rooms/{{topic}}/messages",
        "--publish-body",
        '{"body": {data}}',
        "--time-field",
        "body.t",
        "--seq-field",
        "body.s",
        "--source-field",
        "body.w",
        "--event",
        "message",
    ]


def assert_complete(code: int, output: str, result: dict[str, Any], connections: int) -> None:
    """Every connection made, every event delivered once, every figure filled in."""
    assert code == 0, output
    assert result["connected"] == connections and result["connect_errors"] == 0
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["delivered"] == result["expected"] > 0
    assert result["delivered_per_second"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] < 5000
    assert 0 < result["connect_p50_ms"] <= result["connect_p99_ms"]
    # the probes reach every connection while it connects: all have a first event
    assert result["first_event_clients"] == connections
    assert result["connect_p50_ms"] <= result["first_event_p50_ms"] <= result["first_event_p99_ms"]
    line = output.splitlines()
    assert any(re.search(r"first-event=[0-9.]+ms/[0-9.]+ms", x) for x in line), output


@LOADGEN
@pytest.mark.parametrize("drop_in", [False, True], ids=["sse-starlette", "drop-in"])
def test_the_chat_app_under_load(drop_in: bool, tmp_path: Path) -> None:
    with serve_foreign("chat", drop_in=drop_in) as (base, _):
        code, output, result = loadgen(
            *chat_flags(base), "--connections", "40", "--rate", "10", tmp_path=tmp_path
        )
    assert_complete(code, output, result, 40)
    # 10/s over the 1 s window: fewer when the machine is busy (7 once, beside a full suite)
    assert result["published"] >= 3 and result["publisher"] == "http"
    # the server's memory, found by its port (uvicorn's process): in the line too
    assert result["server_rss_idle_kb"] > 10_000
    assert re.search(r"rss=[0-9.]+MB", output), output


@LOADGEN
def test_a_server_that_publishes_by_itself(tmp_path: Path) -> None:
    with serve_foreign("ticker") as (base, _):
        code, output, result = loadgen(
            "--url",
            f"{base}/ticks",
            "--no-publish",
            "--time-field",
            "ts",
            "--time-unit",
            "ms",
            "--seq-field",
            "n",
            "--event",
            "tick",
            "--connections",
            "20",
            tmp_path=tmp_path,
        )
    assert code == 0, output
    assert result["publisher"] == "none" and result["expected"] == 0 and result["published"] == 0
    # a tick each 50 ms per stream, those stamped in the 1 s window: ~20 per connection
    assert 20 * 12 <= result["delivered"] <= 20 * 22
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert 0 < result["p50_ms"] < 1000  # from the ticks' own times (ms)
    assert result["first_event_clients"] == 20
    assert "nothing expected" in output


@LOADGEN
def test_nchan_over_two_topics(tmp_path: Path) -> None:
    with nchan_server() as (base, _):
        code, output, result = loadgen(
            "--url",
            f"{base}/sub/{{topic}}",
            "--publish-url",
            f"{base}/pub/{{topic}}",
            "--topic",
            "north",
            "--topic",
            "south",
            "--connections",
            "30",
            "--rate",
            "10",
            tmp_path=tmp_path,
        )
    # with two topics, each subscriber sees its topic's sequence without gaps
    assert_complete(code, output, result, 30)
    assert result["topics"] == 2
    assert result["server_rss_idle_kb"]  # nginx's processes, found by the port


@LOADGEN
def test_a_publish_command_per_event(tmp_path: Path) -> None:
    """The load-test page's way: curl run per event. (A Python script per event took a
    second or more to start on a loaded machine: one run outlasted the 2-s window, and
    nothing was published in it.)"""
    with serve_foreign("chat") as (base, _):
        flags = chat_flags(base)
        index = flags.index("--publish-url")
        del flags[index : index + 4]  # no --publish-url nor --publish-body
        command = (
            "curl -sf -H 'Content-Type: application/json' --data-binary '{\"body\": {data}}' "
            + f"{base}/rooms/{{topic}}/messages"
        )
        code, output, result = loadgen(
            *flags,
            "--publish-command",
            command,
            "--connections",
            "10",
            "--rate",
            "5",
            tmp_path=tmp_path,
        )
        assert_complete(code, output, result, 10)
        assert result["publisher"] == "command"
        # and a failing command is counted as a failed publish, with its reason
        code, output, result = loadgen(
            *flags,
            "--publish-command",
            f"{sys.executable} -c \"import sys; sys.exit('no broker')\"",
            "--connections",
            "2",
            "--rate",
            "5",
            tmp_path=tmp_path,
        )
    assert code == 1 and result["publish_errors"] > 0, output
    assert "exit 1: no broker" in output


@LOADGEN
@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--url", "http://127.0.0.1:9/x/{tpoic}", "--no-publish"], "unknown placeholder {tpoic}"),
        (
            [
                "--url",
                "http://127.0.0.1:9/x",
                "--publish-url",
                "http://127.0.0.1:9/p",
                "--publish-body",
                "{dta}",
            ],
            "unknown placeholder {dta}",
        ),
        (["--url", "http://127.0.0.1:9/x?u={data}", "--no-publish"], "{data} has no value"),
        (["--url", "http://10.0.0.7:8000/events", "--no-publish"], "loopback only"),
        (["--url", "https://127.0.0.1:8443/events", "--no-publish"], "plain HTTP/1.1"),
        (["--url", "http://127.0.0.1:9/x"], "say how events are published"),
        (
            ["--url", "http://127.0.0.1:9/x", "--header", "Bearer x", "--no-publish"],
            "'Name: value'",
        ),
        (["--publish-url", "http://127.0.0.1:9/p", "--no-publish"], "choose one way"),
        (["--publish-command", "no-such-program-here {data}"], "not a program on PATH"),
        (["--time-field", "body..t"], "dotted path"),
    ],
)
def test_bad_flags_are_refused_with_what_to_do(flags: list[str], said: str) -> None:
    done = subprocess.run(
        [SSE_FAST, "loadgen", *flags], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stderr


@LOADGEN
def test_the_servers_processes_are_found_by_port(tmp_path: Path) -> None:
    with ServerProcess("--workers", "2") as server:
        assert server.proc is not None
        found = listening_pids(server.port)
        tree = process_tree(server.proc.pid)
        # only the workers listen; the main process (their group's leader) and its
        # helpers count too: the whole tree, nothing else
        assert len(tree) >= 3 and sorted(found) == sorted(tree), (found, tree)
    # started in the caller's own process group (a script's `&`): the workers' command
    # line leads to their main process
    port = free_port()
    argv = [sys.executable, "-m", "sse_fast", "serve", "--port", str(port), "--workers", "2"]
    env = {**os.environ, "SSE_FAST_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        until(lambda: len(listening_pids(port)) >= 3, 30, "the server's workers listening")
        tree = process_tree(proc.pid)
        assert len(tree) >= 3 and listening_pids(port) == sorted(tree)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            for pid in process_tree(proc.pid):  # nothing left running after the test
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("sse-fast serve did not stop 20 s after SIGTERM")
    with serve_foreign("chat") as (base, uvicorn):
        assert uvicorn in listening_pids(int(base.rsplit(":", 1)[1]))
    with socket.socket() as idle:
        idle.bind(("127.0.0.1", 0))  # bound, not listening
        assert listening_pids(idle.getsockname()[1]) == []


def test_a_reader_that_cannot_reach_the_clients_is_refused() -> None:
    with pytest.raises(ValueError, match="top level of an importable module"):
        LoadOptions(
            host="127.0.0.1",
            port=1,
            name="t",
            connections=1,
            rate=1,
            duration=1,
            stamps=Stamps(reader=lambda name, data: Stamp(None, None, None)),
        )


class ClosingServer(ThreadServer):
    """An SSE server that ends every stream after ``per_stream`` events (``retry: 100``)
    and resumes from ``Last-Event-ID``, skipping ``skip`` event numbers when it does: a
    server whose resume really loses events. Counts the resumes it served."""

    def __init__(self, per_stream: int = 8, skip: int = 0) -> None:
        super().__init__()
        self.per_stream = per_stream
        self.skip = skip
        self.resumes = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        last = re.search(r"(?im)^last-event-id: *(\d+)", head)
        n = 0
        if last:
            self.resumes += 1
            n = int(last.group(1)) + 1 + self.skip
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            for k in range(self.per_stream):
                data = json.dumps({"t": time.time(), "s": n + k})
                frame = f"retry: 100\nid: {n + k}\ndata: {data}\n\n"
                writer.write(f"{len(frame):x}\r\n{frame}\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.02)  # pace: the server's stream lasts ~0.16 s
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()


@LOADGEN
@pytest.mark.parametrize("skip", [0, 1], ids=["resumes-exactly", "resume-loses-one"])
def test_streams_the_server_ends_are_reconnected_and_their_gaps_lost(
    skip: int, tmp_path: Path
) -> None:
    with running(ClosingServer(skip=skip)) as server:
        code, output, result = loadgen(
            "--url",
            f"http://127.0.0.1:{server.port}/stream",
            "--no-publish",
            "--reconnect-on-close",
            "--connections",
            "4",
            tmp_path=tmp_path,
        )
        resumes = server.resumes
    # each stream ends every ~0.16 s and comes back 0.1 s later (its retry)
    assert result["reconnected_on_close"] >= 4 * 3, output
    assert resumes >= result["reconnected_on_close"]
    assert result["delivered"] > 0 and result["duplicates"] == 0
    if skip:  # every resume of the measured window lost one event, and the run fails
        assert code == 1 and 4 <= result["lost"] <= resumes, output
        assert "event(s) lost" in output
    else:
        assert code == 0 and result["lost"] == 0, output
    assert re.search(r"reconnects=\d+", output)


@LOADGEN
def test_help_and_runs_without_httptools() -> None:
    """The docs build runs --help without the loadgen extra; a run says how to install it."""
    program = (
        "import sys; sys.modules['httptools'] = None; "
        "from sse_fast.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "loadgen", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--url" in done.stdout and "--publish-command" in done.stdout
    done = subprocess.run(
        [sys.executable, "-c", program, "loadgen", "--port", "9", "--connections", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "pip install httptools" in done.stderr and "'.[loadgen]'" in done.stderr


DATAS = [
    '{"t": 1.5, "s": 3, "w": "a"}',
    '{"t": 1500, "s": 3}',
    '{"t": "soon", "s": 3}',
    '{"t": true, "s": 1}',
    '{"s": false}',
    '{"t": 2, "s": 2.0}',
    '{"t": 1.0, "w": {"k": [1]}}',
    '{"t": null, "s": null}',
    "{}",
    "[1, 2]",
    "null",
    '"text"',
    "not json",
]
STAMPS = [
    Stamps(),
    Stamps(unit="ms"),
    Stamps(time="", sequence="s"),
    Stamps(source=None),
    Stamps(time="t", sequence=None, unit="us"),
]


@pytest.mark.parametrize("stamps", STAMPS, ids=repr)
def test_the_subscribers_fast_reader_reads_as_stamps_does(stamps: Stamps) -> None:
    """The hot path's reader of single-key paths gives what ``Stamps.read`` (the
    reference) gives, for data of every shape."""
    from sse_fast.loadgen._event_reading import Reading

    reading = Reading(stamps)
    for data in DATAS:
        expected = stamps.read("", data)
        got = reading.read("", data)
        assert (tuple(got) if got else None) == (tuple(expected) if expected else None), data

    async def through_a_subscriber(data: str) -> tuple[int, int, dict[object, int], int]:
        from sse_fast.loadgen._stats import ProcessStats
        from sse_fast.loadgen._subscribers import Subscriber

        stats = ProcessStats()
        stats.start_measuring(0.0)
        subscriber = Subscriber(stats, reading=reading)
        subscriber.status = 200
        subscriber.on_body(f"data: {data}\n\n".encode())
        return stats.foreign, stats.received, subscriber.last_seq, stats.histogram.total

    # and the subscribers' own reading (inline for single keys in seconds) agrees
    for data in DATAS:
        expected = stamps.read("", data)
        foreign, received, last_seq, timed = asyncio.run(through_a_subscriber(data))
        if expected is None:
            assert (foreign, received, last_seq, timed) == (1, 0, {}, 0), data
        else:
            sent_at, seq, source = expected
            assert (foreign, received) == (0, 1), data
            assert last_seq == ({} if seq is None else {source: seq}), data
            assert timed == (sent_at is not None), data


@LOADGEN
def test_run_load_takes_the_servers_api_as_objects() -> None:
    """From Python: the subscription, the publish and the stamps, no host or port."""
    from sse_fast.loadgen import run_load
    from sse_fast.loadtarget import HttpPublish, Subscription

    with serve_foreign("chat") as (base, _):
        result = run_load(
            subscribe=Subscription(
                f"{base}/rooms/{{topic}}/stream", {"Authorization": "Bearer user-{user}"}
            ),
            publish=HttpPublish(f"{base}/rooms/{{topic}}/messages", body='{"body": {data}}'),
            stamps=Stamps(
                time="body.t", sequence="body.s", source="body.w", events=frozenset({"message"})
            ),
            topic_names=["lobby", "kitchen"],
            connections=10,
            rate=10,
            duration=1,
            warmup=0.3,
            drain=0.3,
            processes=1,
            sources=1,
        )
    assert result.target == base.removeprefix("http://")
    assert result.problems() == [], result.line()
    assert result.topics == 2 and result.delivered == result.expected > 0
    assert result.first_event_clients == 10
