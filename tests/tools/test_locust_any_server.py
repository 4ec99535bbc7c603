"""``sse_fast.locust`` against SSE servers that are not ours: an sse-starlette chat app
(and the same app on sse_fast's drop-in), a server-driven ticker, Nchan. Each test
runs locust headless in a process of its own for a few seconds and reads its CSV
and its exit status: the figures (events with latency, time to first event, lost,
duplicate) and the thresholds that decide the exit code. Real processes: locust and the
servers it loads, as a user runs them."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from sse_fast.testing import ServerProcess, free_port
from tests.support.foreign_apps import serve_foreign
from tests.support.nchan import nchan_server
from tests.support.starting import StartingServer, fill_history
from tests.support.waiting import until

UNTIMED = "event (no time)"

ROOT = Path(__file__).resolve().parents[2]

#: the options that point the users at the chat app (see tests/support/foreign_apps.py)
CHAT = (
    "--sse-url",
    "/rooms/{topic}/stream",
    "--sse-header",
    "Authorization: Bearer user-{user}",
    "--sse-event",
    "message",
    "--sse-time-field",
    "body.t",
    "--sse-seq-field",
    "body.s",
    "--sse-source-field",
    "body.w",
    "--sse-publish-url",
    "/rooms/{topic}/messages",
    "--sse-publish-body",
    '{"body": {data}}',
    "--sse-publish-header",
    "Content-Type: application/json",
)
#: the options for the ticker: its own events, time in ms, a sequence per stream
TICKER = (
    "--sse-url",
    "/ticks",
    "--sse-event",
    "tick",
    "--sse-time-field",
    "ts",
    "--sse-time-unit",
    "ms",
    "--sse-seq-field",
    "n",
    "--sse-source-field",
    "",
)


pytestmark = [
    pytest.mark.processes("locust run against real servers, ours and others"),
    # one of three lanes of the load tools' tests, which wait on timed runs most: xdist
    # hands the groups out first, so one worker runs the lane from the start beside the
    # CPU-heavy groups (tests/support/processes.py)
    pytest.mark.xdist_group("tools_locust"),
]


@dataclass
class Run:
    """A finished locust run: its exit status, its stderr, and its CSV rows."""

    status: int
    stderr: str
    rows: dict[tuple[str, str], dict[str, str]]

    def count(self, name: str, kind: str = "SSE") -> int:
        """``# requests`` of a row (0 when it is not there)."""
        return int(self.rows.get((kind, name), {}).get("Request Count", "0"))

    def failures(self, name: str, kind: str = "SSE") -> int:
        """``# failures`` of a row."""
        return int(self.rows.get((kind, name), {}).get("Failure Count", "0"))

    def average(self, name: str, kind: str = "SSE") -> float:
        """The row's average response time (ms)."""
        return float(self.rows[(kind, name)]["Average Response Time"])


def _run_seconds(stderr: str) -> float:
    """Seconds from locust's "Run time limit set" log line to its "limit reached" one."""
    stamps = {}
    for line in stderr.splitlines():
        for key in ("Run time limit set", "--run-time limit reached"):
            if key in line:
                stamps[key] = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    return (stamps["--run-time limit reached"] - stamps["Run time limit set"]).total_seconds()


def run_locust(
    tmp_path: Path,
    host: str,
    *options: str,
    users: tuple[str, ...] = ("SSEUser", "PublisherUser"),
    locustfile: str = "",
) -> Run:
    """Run locust headless on ``tmp_path/locustfile`` (default: one that imports the two
    users), to ``host``, with ``options``; wait for it to end."""
    if not locustfile:
        locustfile = "locustfile.py"
        text = "from sse_fast.locust import PublisherUser, SSEUser  # noqa: F401\n"
        (tmp_path / locustfile).write_text(text)
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(tmp_path / locustfile),
        *users,
        "--headless",
        "--only-summary",
        "--host",
        host,
        "--csv",
        str(tmp_path / "run"),
        *options,
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    rows = {}
    if (tmp_path / "run_stats.csv").exists():
        with open(tmp_path / "run_stats.csv") as f:
            rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    return Run(done.returncode, done.stderr, rows)


@pytest.mark.parametrize("drop_in", [False, True], ids=["sse-starlette", "sse_fast-drop-in"])
def test_the_chat_app_is_measured_and_resumed_without_loss(tmp_path: Path, drop_in: bool) -> None:
    with serve_foreign("chat", drop_in=drop_in) as (base, _):
        run = run_locust(
            tmp_path,
            base,
            *CHAT,
            *("-u", "4", "-r", "4", "-t", "5s", "--publish-rate", "10"),
            "--sse-reconnect-every",
            "1.5",  # streams end and resume with Last-Event-ID (the app's retry: 1 s)
        )
    assert run.status == 0, run.stderr[-3000:]
    assert run.count("event") >= 3 * 20, run.rows  # 3 subscribers, 10/s, seconds of it
    assert run.failures("event") == 0
    assert 0 < run.average("event") < 1000  # latency from body.t, in ms
    assert run.count("first event") >= 3 and run.average("first event") > 0
    assert run.count("other") >= 3  # each connection's "joined" event does not count
    assert run.count("reconnect") >= 3
    assert run.count("lost") == 0 and run.count("duplicate") == 0, run.rows
    assert run.count("/rooms/{topic}/messages", "POST") >= 20
    assert run.failures("/rooms/{topic}/messages", "POST") == 0


def test_reconnecting_without_last_event_id_loses_events_and_fails(tmp_path: Path) -> None:
    with serve_foreign("chat") as (base, _):
        run = run_locust(
            tmp_path,
            base,
            *CHAT,
            *("-u", "3", "-r", "3", "-t", "5s", "--publish-rate", "10"),
            *("--sse-reconnect-every", "1.5", "--sse-no-resume"),
        )
    # each reconnection waits the app's retry (1 s) and is not sent what was published
    # meanwhile: about 10 events lost per reconnection, none a publish failure
    assert run.count("reconnect") >= 2, run.rows
    assert run.count("lost") >= run.count("reconnect") * 5, run.rows
    assert run.count("gap") >= 2
    assert run.failures("/rooms/{topic}/messages", "POST") == 0
    assert run.status == 1, run.stderr[-3000:]
    assert "over --sse-max-lost 0" in run.stderr


def test_a_server_driven_ticker_needs_no_publisher(tmp_path: Path) -> None:
    with serve_foreign("ticker") as (base, _):
        run = run_locust(
            tmp_path,
            base,
            *TICKER,
            *("-u", "2", "-r", "2", "-t", "5s", "--publishers", "0"),
            *("--sse-reconnect-every", "0.5", "--sse-retry", "0.2", "--sse-seq-per-stream"),
            users=("SSEUser",),
        )
    assert run.status == 0, run.stderr[-3000:]
    assert run.count("event") >= 2 * 15, run.rows  # 20 ticks/s per stream
    assert 0 < run.average("event") < 1000  # "ts" read in ms
    assert run.count("reconnect") >= 4
    assert run.count("lost") == 0 and run.count("duplicate") == 0, run.rows
    # the run lasted its -t: gevent's clock was not left where locust's imports began
    assert _run_seconds(run.stderr) >= 4.9


def test_a_sequence_that_restarts_counts_as_duplicates_unless_per_stream(
    tmp_path: Path,
) -> None:
    with serve_foreign("ticker") as (base, _):
        run = run_locust(
            tmp_path,
            base,
            *TICKER,
            *("-u", "1", "-r", "1", "-t", "5s", "--publishers", "0"),
            *("--sse-reconnect-every", "0.5", "--sse-retry", "0.2"),
            users=("SSEUser",),
        )
    # the ticker counts n from 1 on each connection: across a reconnection, without
    # --sse-seq-per-stream, the numbers seen before arrive again
    assert run.count("reconnect") >= 1, run.rows
    assert run.count("duplicate") >= 3, run.rows
    assert run.status == 1
    assert "over --sse-max-duplicates 0" in run.stderr


@pytest.mark.parametrize("by", ["url", "command"])
def test_nchan_is_measured_without_loss(tmp_path: Path, by: str) -> None:
    with nchan_server() as (base, _):
        if by == "url":
            publish = ("--sse-publish-url", "/pub/{topic}")
            row = ("/pub/{topic}", "POST")
        else:  # a command per event, run without a shell
            if shutil.which("curl") is None:
                pytest.skip("curl is not installed")
            command = f"curl -sf --data-binary {{data}} {base}/pub/{{topic}}"
            publish = ("--sse-publish-command", command)
            row = ("publish command", "CMD")
        run = run_locust(
            tmp_path,
            base,
            *("--sse-url", "/sub/{topic}", *publish),
            *("-u", "4", "-r", "4", "-t", "5s", "--publish-rate", "10"),
        )
    assert run.status == 0, run.stderr[-3000:]
    assert run.count("event") >= 3 * 20, run.rows
    assert 0 < run.average("event") < 1000
    assert run.count("first event") >= 3
    assert run.count("lost") == 0 and run.count("duplicate") == 0, run.rows
    assert run.count(*row) >= 20 and run.failures(*row) == 0


@pytest.mark.parametrize("limit", ["default", "100%"])
def test_publish_failures_are_apart_from_loss_and_judged_by_their_threshold(
    tmp_path: Path, limit: str
) -> None:
    with serve_foreign("ticker") as (base, _):
        run = run_locust(
            tmp_path,
            base,
            *TICKER,
            *("-u", "2", "-r", "2", "-t", "3s", "--publish-rate", "10"),
            *("--sse-publish-url", "/no-such-path/{topic}"),
            *(("--sse-max-publish-failures", limit) if limit != "default" else ()),
        )
    assert run.count("event") >= 10, run.rows  # the ticker's events flow all along
    assert run.count("lost") == 0 and run.count("duplicate") == 0
    publishes = run.count("/no-such-path/{topic}", "POST")
    assert publishes >= 5 and run.failures("/no-such-path/{topic}", "POST") == publishes
    if limit == "default":  # 10%
        assert run.status == 1
        assert f"{publishes} of {publishes} over --sse-max-publish-failures 10%" in run.stderr
    else:
        assert run.status == 0, run.stderr[-3000:]  # failed publishes, but within the limit


def test_refused_subscriptions_fail_the_run_and_say_so(tmp_path: Path) -> None:
    options = [o for o in CHAT if not o.startswith(("--sse-header", "Authorization"))]
    with serve_foreign("chat") as (base, _):
        run = run_locust(
            tmp_path,
            base,
            *options,
            *("-u", "2", "-r", "2", "-t", "3s", "--publishers", "0"),
            users=("SSEUser",),
        )
    refused = run.failures("/rooms/{topic}/stream", "GET")
    assert refused >= 2, run.rows  # 401 without the Authorization header
    assert run.status == 1
    assert "over --sse-max-refusals 5%" in run.stderr
    assert "401" in (tmp_path / "run_failures.csv").read_text()


#: a user's locustfile: the users pointed at the chat app (at HOST) by attributes and methods
PYTHON_USERS = '''
import orjson

from sse_fast.loadtarget import CommandPublish, HttpPublish, Stamp, Stamps
from sse_fast.locust import PublisherUser, SSEUser


class ChatReader(SSEUser):
    url = "/rooms/{topic}/stream"
    headers = {"Authorization": "Bearer user-{user}"}
    topic = "lobby"
    stamps = Stamps("body.t", "body.s", "body.w", events=frozenset({"message"}))


class RoomOrderReader(SSEUser):
    """The room's own counter n as the one sequence, whoever published; no stamps: the
    default ones (t, s, w at the top) find nothing in the chat's events."""

    url = ChatReader.url
    headers = ChatReader.headers
    topic = "lobby"

    def counts(self, event):
        return event.event == "message"

    def read_stamp(self, event):
        body = orjson.loads(event.data)
        return Stamp(body["body"]["t"], body["n"], "room")


class ChatWriter(PublisherUser):
    topic = "lobby"
    publish = HttpPublish(
        "HOST/rooms/{topic}/messages",
        body='{"body": {data}}',
        headers={"Content-Type": "application/json"},
    )


class CurlWriter(PublisherUser):
    topic = "lobby"
    publish = CommandPublish(
        ["curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json",
         "--data-binary", '{"body": {data}}', "HOST/rooms/{topic}/messages"]
    )
'''


def test_a_python_locustfile_points_the_users_by_attributes_and_methods(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (CurlWriter runs it)")
    with serve_foreign("chat") as (base, _):
        (tmp_path / "users.py").write_text(PYTHON_USERS.replace("HOST", base))
        run = run_locust(
            tmp_path,
            base,
            *("-u", "4", "-r", "4", "-t", "4s", "--publish-rate", "5"),
            users=("ChatReader", "RoomOrderReader", "ChatWriter", "CurlWriter"),
            locustfile="users.py",
        )
    assert run.status == 0, run.stderr[-3000:]
    # 2 readers (one of each), 2 publishers at 5/s: every event counted, with latency
    assert run.count("event") >= 2 * 2 * 10, run.rows
    assert run.count(UNTIMED) == 0 and 0 < run.average("event") < 1000
    assert run.count("lost") == 0 and run.count("duplicate") == 0, run.rows
    assert run.count("/rooms/{topic}/messages", "POST") >= 10
    assert run.count("publish command", "CMD") >= 10
    assert run.failures("publish command", "CMD") == 0


def _events_so_far(stats: Path) -> int:
    """The ``SSE event`` count of a running locust's CSV (refreshed every second)."""
    try:
        with open(stats) as f:
            rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    except (OSError, csv.Error):
        return 0
    return int(rows.get(("SSE", "event"), {}).get("Request Count", "0"))


def _until_events(stats: Path, locust: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until a running locust counted 10 events (its CSV), failing if it stopped or
    ``timeout`` seconds passed."""
    until(
        lambda: _events_so_far(stats) >= 10 or locust.poll() is not None,
        timeout,
        "10 events in locust's CSV (or locust's end)",
    )
    assert _events_so_far(stats) >= 10, "no events at all: locust stopped"


def _kill(locust: subprocess.Popen[bytes]) -> None:
    """Kill ``locust`` if it still runs (a test that failed while it ran)."""
    if locust.poll() is None:
        locust.kill()
        locust.wait()


def _ended_run(tmp_path: Path, locust: subprocess.Popen[bytes], log: Path) -> Run:
    """The run of the ended ``locust``, read from ``tmp_path/run_*``."""
    with open(tmp_path / "run_stats.csv") as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    return Run(locust.returncode, log.read_text(), rows)


def test_a_restart_of_sse_fast_fails_publishes_but_not_the_run(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "data"
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text("from sse_fast.locust import PublisherUser, SSEUser  # noqa: F401\n")
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "SSEUser", "PublisherUser"]
    argv += ["--headless", "--only-summary", "-u", "4", "-r", "4", "-t", "10s"]
    argv += ["--publish-rate", "5", "--host", f"http://127.0.0.1:{port}"]
    argv += ["--csv", str(tmp_path / "run"), "--sse-max-publish-failures", "60%"]
    log = tmp_path / "locust.log"
    with open(log, "w") as stderr, ServerProcess(port=port, data_dir=str(data)) as first:
        locust = subprocess.Popen(argv, cwd=ROOT, stderr=stderr)
        try:
            _until_events(tmp_path / "run_stats.csv", locust, 30)
            first.stop()  # SIGTERM: the streams are ended with sse-fast-disconnect (draining)
            with ServerProcess(port=port, data_dir=str(data)):
                locust.wait(60)
        finally:
            _kill(locust)
    result = _ended_run(tmp_path, locust, log)
    # every stream was ended (draining) and resumed from the history on disk
    assert result.count("sse-fast-disconnect") >= 3 and result.count("reconnect") >= 3
    assert result.count("lost") == 0 and result.count("duplicate") == 0, result.rows
    assert result.failures("/publish", "POST") >= 1  # refused while the server was down
    assert result.status == 0, result.stderr[-3000:]  # within --sse-max-publish-failures


def test_told_to_come_back_over_a_limit_is_a_refusal_not_a_reconnect(tmp_path: Path) -> None:
    """Over ``max_connections`` sse_fast answers a come-back (a 200 with
    ``SSE-Fast-Come-Back: max-connections`` and one ``sse-fast-disconnect``): the users
    count it as a refused subscription named as the load generator names it, come back
    after its retry, and never report it as a reconnection or a stream."""
    limits = {"max_connections": 1, "max_connections_per_ip": 0, "connect_rate_per_ip": 0}
    with ServerProcess("--workers", "1", **limits) as server:
        # one publisher, three subscribers: one holds the only slot
        run = run_locust(
            tmp_path, server.url, *("-u", "4", "-r", "4", "-t", "5s", "--publish-rate", "5")
        )
    told = run.failures("/events", "GET")
    # each subscriber without the slot told once in the 5 s: it waits the come-back's
    # retry (at least the limit's Retry-After of 5 s), not its own --sse-retry of 3 s
    assert told == 2 and run.count("/events", "GET") == 3, run.rows
    failures = (tmp_path / "run_failures.csv").read_text()
    assert "told to come back (max-connections): " in failures, failures
    assert "connection limit reached" in failures  # the server's sentence: what was wrong
    assert run.count("event") >= 5  # the one stream got its events
    # not streams: no reconnection, no stream end, no disconnect of a stream
    assert run.count("reconnect") == 0 and run.count("stream end") == 0, run.rows
    assert run.count("sse-fast-disconnect") == 0, run.rows
    assert run.status == 1
    assert "over --sse-max-refusals 5%" in run.stderr


#: users that wait for the file $SERVER_STARTED before their first request: locust takes
#: seconds to start (6 s beside a suite), as long as a restore, so it starts first
GATED_USERS = """
import os

import gevent

from sse_fast.locust import PublisherUser, SSEUser


def wait_for_the_server():
    while not os.path.exists(os.environ["SERVER_STARTED"]):
        gevent.sleep(0.05)


class Reader(SSEUser):
    def on_start(self):
        wait_for_the_server()


class Writer(PublisherUser):
    def on_start(self):
        wait_for_the_server()
        super().on_start()
"""


def test_told_to_come_back_while_sse_fast_starts_is_no_failure(tmp_path: Path) -> None:
    """A stream asked for while sse_fast restores its history is told to come back
    (``starting``): the users take it as a restart's ``draining`` end, a success of the
    ``sse-fast-disconnect`` row that fails nothing, and come back for the stream."""
    data, started, port = tmp_path / "data", tmp_path / "started", free_port()
    data.mkdir()
    fill_history(data)  # a restore of seconds
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(GATED_USERS)
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "Reader", "Writer"]
    argv += ["--headless", "--only-summary", "-u", "3", "-r", "3", "-t", "60s"]
    argv += ["--host", f"http://127.0.0.1:{port}", "--csv", str(tmp_path / "run")]
    argv += ["--sse-max-publish-failures", "100%"]  # refused while the server starts
    log = tmp_path / "locust.log"
    env = {**os.environ, "SERVER_STARTED": str(started)}
    with open(log, "w") as stderr:
        locust = subprocess.Popen(argv, cwd=ROOT, stderr=stderr, env=env)
        try:
            until(
                lambda: "All users spawned" in log.read_text() or locust.poll() is not None,
                60,
                "locust's users spawned (or locust's end)",
            )
            assert "All users spawned" in log.read_text(), log.read_text()
            with StartingServer("--workers", "1", port=port, data_dir=str(data)):
                started.touch()  # the users ask while the history is restored
                _until_events(tmp_path / "run_stats.csv", locust, 90)
                locust.terminate()  # locust ends the run on SIGTERM, as at its time limit
                locust.wait(30)
        finally:
            _kill(locust)
    run = _ended_run(tmp_path, locust, log)
    told = run.count("sse-fast-disconnect")
    assert told >= 1, f"the start was over before the users came: {run.rows}"
    assert run.failures("sse-fast-disconnect") == 0, run.rows
    assert run.failures("/events", "GET") == 0, run.rows
    # both subscribers got their stream; each one told to come back is back once on it
    # (a come-back is not a stream: no reconnect, no stream end of its own)
    assert run.count("first event") == 2, run.rows
    assert 1 <= run.count("reconnect") <= min(2, told), run.rows
    assert run.count("stream end") == 0, run.rows
    assert run.count("lost") == 0 and run.count("duplicate") == 0, run.rows
    assert run.status == 0, run.stderr[-3000:]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (("--sse-url", "/rooms/{tpoic}/stream"), "unknown placeholder {tpoic} in"),
        (("--sse-max-lost", "a few"), "--sse-max-lost 'a few': give a count"),
        (("--sse-publish-url", "/pub/{user}"), "{user} has no value"),
    ],
    ids=["misspelt-placeholder", "threshold", "placeholder-without-value"],
)
def test_a_bad_option_stops_locust_before_the_run_saying_what_to_write(
    tmp_path: Path, options: tuple[str, ...], said: str
) -> None:
    run = run_locust(tmp_path, "http://127.0.0.1:9", *options, "-t", "30s")
    assert run.status == 2, run.stderr[-3000:]
    assert said in run.stderr
    assert "Ramping" not in run.stderr  # no user started


def test_streams_that_break_count_against_their_own_threshold(tmp_path: Path) -> None:
    with serve_foreign("chat") as (base, _):
        run = run_locust(
            tmp_path,
            base,
            *CHAT,
            *("-u", "2", "-r", "2", "-t", "3s", "--publishers", "0", "--sse-min-events", "0"),
            # nothing is published and the app pings every 5 s: each stream times out
            *("--sse-read-timeout", "0.3", "--sse-retry", "0.2"),
            users=("SSEUser",),
        )
    broken = run.failures("stream end")
    assert broken >= 4 and broken == run.count("stream end"), run.rows
    assert run.failures("/rooms/{topic}/stream", "GET") == 0  # opened fine: not refusals
    assert run.status == 1
    assert f"{broken} of {broken} over --sse-max-stream-errors 5%" in run.stderr
    assert "--sse-max-refusals" not in run.stderr
