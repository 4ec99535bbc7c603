"""A server's start as an orchestrator sees it, with real ``sse-fast serve``
processes: liveness from the first second while the history is restored,
readiness and every other endpoint after it (``sse_fast/app/_start.py``), and
start-up failures said in one line with exit status 2, never a respawn loop
(``sse_fast/_startup.py``). Real processes: a start's restore, signals and workers
are those of the processes an orchestrator starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sse_fast.testing import (
    HOST,
    RedisServer,
    ServerProcess,
    collect,
    free_port,
    http_request,
    wait_for,
)

from ..support.ports import refusing_port
from ..support.starting import EVENTS, PER_TOPIC, StartingServer, fill_history
from ..support.waiting import until

pytestmark = [
    pytest.mark.xdist_group("restart"),
    pytest.mark.processes("real servers' starts: restores, signals and workers"),
]


async def _watch_the_start(server: ServerProcess, workers: int) -> list[str]:
    """Poll until every worker is ready; while any is not, ``/livez`` must answer
    200 and the refusals must say why. The reasons ``/readyz`` gave, in order."""
    reasons: list[str] = []

    async def every_worker_ready() -> bool:
        status, _, body = await server.get("/livez")
        assert status == 200, body
        status, _, body = await server.get("/readyz")
        if status == 503:
            answer = json.loads(body)
            assert answer["status"] == "starting", answer
            reasons.append(answer["reason"])
            client = server.client("t5", last_event_id="e5010")
            await client.connect()  # never refused: a browser would not come back
            resume = client.response_headers.get("sse-fast-resume")
            if resume is None:  # a worker still starting: told when to come back
                (told,) = await collect(client, 2, timeout=10)
                # its last event id stays the one it came with (the frame has no id:)
                assert told.event == "sse-fast-disconnect" and told.id == "e5010", told
                assert 2000 <= told.retry <= 4000
                data = json.loads(told.data)
                assert data["reason"] == "starting"
                assert data["message"].startswith("this server serves no streams yet: ")
            else:  # a worker ready meanwhile: never a resume from half a history
                assert resume == "resumed"
            client.close()
            return False
        assert status == 200, body
        status, _, body = await server.get("/stats")
        return status == 200 and json.loads(body)["workers_reporting"] == workers

    try:
        await wait_for(every_worker_ready, timeout=180, interval=0.05, what="every worker ready")
    except TimeoutError:
        raise AssertionError(f"the server was not ready within 180 s: {reasons[-3:]}") from None
    return reasons


async def _once_ready(server: ServerProcess, reasons: list[str]) -> None:
    """What a start that was watched must show once ready: the restore was seen in
    progress, the whole history is there (a resume from an old id is "resumed"), a
    publish is taken."""
    counted = [r for r in reasons if r.startswith("restoring history (")]
    assert counted, f"no restore was seen in progress: {reasons}"
    assert counted[-1].endswith(f" of {EVENTS:,} events)"), counted[-1]
    client = server.client("t5", last_event_id="e5010")
    await client.connect()
    assert client.response_headers["sse-fast-resume"] == "resumed"
    rest = [f"e{n}" for n in range(5011, 6 * PER_TOPIC)]  # the topic's events after it
    events = await collect(client, len(rest))
    assert [e.id for e in events] == rest
    client.close()
    status, _, reply = await server.publish(b'{"topic": "t5", "data": "after"}')
    assert status == 200, reply


def test_liveness_answers_while_history_is_restored(tmp_path: Path) -> None:
    """One worker (four: the liveness figure's test below, which watches the same)."""
    fill_history(tmp_path)
    with StartingServer("--workers", "1", data_dir=str(tmp_path)) as server:

        async def main() -> None:
            await _once_ready(server, await _watch_the_start(server, 1))

        asyncio.run(main())


def test_a_stop_while_restoring_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM in the middle of the restore: the server stops at once (status
    0), and the next start restores the whole history again."""
    fill_history(tmp_path)
    with StartingServer(data_dir=str(tmp_path)) as server:

        async def restoring() -> bool:
            status, _, body = await server.get("/readyz")
            assert status == 503, "ready before the test could stop it mid-restore"
            return bool(json.loads(body)["reason"].startswith("restoring history"))

        asyncio.run(wait_for(restoring, timeout=60, what="the restore seen under way"))
        stopped = time.monotonic()
        assert server.stop() == 0, server.output()
        assert time.monotonic() - stopped < 10, server.output()
        assert "lifespan shutdown while starting" in server.output()
        assert "Traceback" not in server.output()
    with ServerProcess(data_dir=str(tmp_path), ready_timeout=60) as again:

        async def resumed() -> None:
            client = again.client("t499", last_event_id="e499000")
            await client.connect()
            assert client.response_headers["sse-fast-resume"] == "resumed"
            rest = [f"e{n}" for n in range(499_001, EVENTS)]
            events = await collect(client, len(rest))
            assert [e.id for e in events] == rest
            client.close()

        asyncio.run(resumed())


#: the drain timeout a stop is promised within, plus a second (docs/operations/drain.md):
#: shorter than the default 5 s, so that a stop waiting for the reading shows with a
#: history filled in 2.5 s
DRAIN_TIMEOUT = 2.0
#: events on disk when a stop comes while each of 4 workers reads them ("reading": 2
#: million, 130 MiB, read for seconds: a stop that waited for the reading took 4 to 9 s
#: with 1.5 million; one that stops it, 0.3 to 0.6 s) or applies them ("applying": a
#: million, applied for seconds a worker, after a reading the test waits out)
STOPPED_EVENTS = {"reading": 2_000_000, "applying": 1_000_000}


async def _until_restoring(server: ServerProcess, phase: str) -> str:
    """Poll ``/readyz`` until a worker says it is in ``phase`` of its restore: "reading"
    (the data directory) or "applying" (N of M events); what it said."""
    said: list[str] = []

    async def in_phase() -> bool:
        # a generous timeout: a worker that holds the GIL answers late, and the test
        # is about the exit, not this answer
        status, _, body = await http_request(HOST, server.port, "GET", "/readyz", timeout=30)
        assert status == 503, "ready before the test could stop it mid-restore"
        reason = json.loads(body)["reason"]
        said.append(reason)
        if phase == "reading":
            return bool(reason == "restoring history (reading the data directory)")
        return reason.startswith("restoring history (") and reason.endswith(" events)")

    await wait_for(in_phase, timeout=60, interval=0.02)
    return said[-1]


@pytest.mark.alone  # four workers fill both cores: the exit time is the figure
@pytest.mark.parametrize("phase", ["reading", "applying"])
def test_a_stop_during_the_restore_exits_within_the_drain_timeout(
    tmp_path: Path, phase: str
) -> None:
    """SIGTERM while the workers read the data directory, or apply its events: the
    restore is stopped, not waited for, and the server exits 0 within
    ``--drain-timeout`` plus a second, as every stop does (issue 53, item 3)."""
    fill_history(tmp_path, STOPPED_EVENTS[phase])
    with StartingServer(
        "--workers", "4", data_dir=str(tmp_path), drain_timeout=DRAIN_TIMEOUT
    ) as server:
        said = asyncio.run(_until_restoring(server, phase))
        stopped = time.monotonic()
        assert server.stop(timeout=60) == 0, server.output()
        took = time.monotonic() - stopped
        assert took < DRAIN_TIMEOUT + 1, f"{took:.1f} s after SIGTERM ({said})"
        assert "lifespan shutdown while starting" in server.output()
        assert "Traceback" not in server.output()


@pytest.mark.alone  # four workers forked while nothing else runs: the race as it comes
def test_a_stop_while_the_workers_are_forked_is_not_lost(tmp_path: Path) -> None:
    """SIGTERM as Granian forks the third of 4 workers: a worker took it before its
    handler was in place (the main process's, inherited; or uvloop's, paused between
    the lifespan's startup and serving) and served on, the main process waiting for
    it (4 of 4 such stops hung). Held until the worker can drain, it stops them all."""
    (tmp_path / "data").mkdir()
    output = tmp_path / "serve.log"
    command = [sys.executable, "-m", "sse_fast", "serve", "--port", str(free_port())]
    command += ["--workers", "4", "--data-dir", str(tmp_path / "data")]
    command += ["--drain-timeout", str(DRAIN_TIMEOUT)]
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SSE_FAST_ALLOW_ANONYMOUS_PUBLISH": "1"},
            start_new_session=True,  # its whole group killed below if it hangs
        )
    try:

        def forking() -> bool:
            assert proc.poll() is None, output.read_text()
            return "Spawning worker-3" in output.read_text(errors="replace")

        # looked at often: the moment is a few milliseconds wide
        until(forking, 30, "Granian forking the third worker", every=0.002)
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    said = output.read_text(errors="replace")
    assert code == 0, f"status {code} {took:.1f} s after SIGTERM: {said}"
    assert took < DRAIN_TIMEOUT + 1, f"{took:.1f} s after SIGTERM: {said}"
    assert "Killing worker" not in said, said  # stopped by its drain, not the backstop


@pytest.mark.alone  # the figure is a latency: four workers on the machine's cores alone
def test_liveness_answers_within_a_second_all_through_the_restore(tmp_path: Path) -> None:
    """``/livez`` asked every 100 ms from the first answer until every one of 4 workers
    has restored 500,000 events: the slowest answer within 1 s, the deployment page's
    probe (5 s timeout) never near failing (issue 53, item 4: 5.4 s before). Meanwhile
    the start is watched as with one worker (``_watch_the_start``), and once ready the
    history is whole (``_once_ready``)."""
    fill_history(tmp_path)
    with StartingServer("--workers", "4", data_dir=str(tmp_path)) as server:

        async def main() -> list[tuple[float, float]]:
            answers: list[tuple[float, float]] = []  # (asked at, seconds to answer)
            began = time.monotonic()

            async def livez() -> None:
                asked = time.monotonic()
                status, _, body = await http_request(HOST, server.port, "GET", "/livez", timeout=30)
                assert status == 200, body
                answers.append((asked - began, time.monotonic() - asked))

            async def poll(done: asyncio.Event) -> None:
                async with asyncio.TaskGroup() as group:
                    while not done.is_set():
                        group.create_task(livez())
                        # the probe's period, 100 ms, ended at once by the condition
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(done.wait(), 0.1)

            done = asyncio.Event()
            poller = asyncio.create_task(poll(done))
            try:
                reasons = await _watch_the_start(server, 4)
            finally:
                done.set()
                await poller
            await _once_ready(server, reasons)
            return answers

        answers = asyncio.run(main())
    asked, slowest = max(answers, key=lambda answer: answer[1])
    assert slowest < 1.0, f"/livez asked {asked:.1f} s in answered after {slowest:.2f} s"


def run_serve(*args: str, timeout: float = 60) -> tuple[int, str, float]:
    """``sse-fast serve`` that is expected to stop by itself: its status, output
    and seconds taken."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SSE_FAST_ALLOW_ANONYMOUS_PUBLISH": "1"},
        check=False,
    )
    return done.returncode, done.stderr + done.stdout, time.monotonic() - started


def one_line(output: str) -> str:
    """The one ``sse-fast: `` line of a failed start; no traceback, no respawn."""
    assert "Traceback" not in output, output
    assert "respawn" not in output.lower() and "crash loop" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith("sse-fast: ")]
    return line


def test_a_cluster_node_given_as_one_redis_is_refused_at_start(tmp_path: Path) -> None:
    """A Redis Cluster node given as redis:// (one Redis) would split the one sequence over
    its slots: refused before any worker, with the URL form to give instead."""
    cluster = (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(tmp_path / "nodes.conf"),
        "--cluster-port",  # its bus port (else the port + 10000, maybe past 65535)
        str(free_port()),
    )
    with RedisServer(0, *cluster) as redis:
        redis.cli("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        code, output, took = run_serve("--redis-url", redis.url, "--workers", "2")
    assert code == 2, output
    line = one_line(output)
    assert "Redis Cluster node (INFO cluster says cluster_enabled:1)" in line, line
    assert "give the Cluster as redis-cluster://host:port" in line
    assert "Starting granian" not in output  # refused before any worker
    assert took < 20, f"{took:.1f} s: refused at once, not after a wait for CROSSSLOT"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_start_failing_in_the_workers_stops_the_server(workers: int) -> None:
    """Redis cannot be reached: each worker's start fails after its 10 s wait.
    The server stops with that sentence, not Granian respawning the workers
    every 10 s while the main process serves nothing."""
    with refusing_port() as port:  # not free_port(): another test's Redis may take that
        nobody = f"redis://127.0.0.1:{port}/0"
        code, output, took = run_serve("--redis-url", nobody, "--workers", str(workers))
    assert code == 2, output
    line = one_line(output)
    assert f"cannot reach Redis at {nobody}" in line, line
    assert "Spawning worker" in output  # the workers did start, and failed
    assert took < 45, f"{took:.1f} s: stopped after the workers' wait, not respawned"


#: an EventSource on topic t5 resuming from e5010 (a page's EventSource cannot set
#: Last-Event-ID: the query parameter stands in)
BROWSER_STREAM = "/events?topic=t5&lastEventId=e5010"


def test_a_browser_that_reaches_a_starting_server_comes_back_and_resumes(
    tmp_path: Path,
) -> None:
    """Chromium's EventSource stops reconnecting for good on any status but 200, so a
    stream asked for while the server restores its history is told when to come back
    (a 200 of one ``sse-fast-disconnect`` frame with a ``retry``), not refused with 503:
    the browser keeps trying, then resumes with every event after its id."""
    from ..support.browser import chromium, watch_event_source

    fill_history(tmp_path)
    # the browser and its page first: they take longer to start than some restores
    with chromium() as browser:
        page = browser.new_page()
        with StartingServer(data_dir=str(tmp_path)) as server:
            page.goto(server.url + "/livez")  # the page's origin: the server's
            page.evaluate(watch_event_source(BROWSER_STREAM))
            rest = [f"e{n}" for n in range(5011, 6 * PER_TOPIC)]
            page.wait_for_function(
                f"() => window.seen.closed || window.seen.ids.length >= {len(rest)}",
                timeout=90_000,
            )
            seen = page.evaluate("window.seen")
            page.evaluate("window.source.close()")
    assert not seen["closed"], seen
    # it did reach the start (the restore takes seconds), and came back
    assert "starting" in seen["told"], f"the start was over before the browser came: {seen}"
    assert seen["ids"] == rest, seen["ids"][:5]  # resumed: each event once, in order


def _policies(pid: int) -> dict[str, set[int]]:
    """The scheduling policy of each of ``pid``'s threads, by thread name."""
    out: dict[str, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            name = (task / "comm").read_text().strip()
            out.setdefault(name, set()).add(os.sched_getscheduler(int(task.name)))
    return out


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="scheduling policies are Linux's")
def test_the_server_and_every_thread_of_its_workers_run_as_batch() -> None:
    """``--scheduling`` (``sse_fast/_scheduling.py``): set in serve's process before Granian
    starts, it reaches every worker and the threads Granian starts in them (the event loop,
    the I/O thread making the writes: ``tokio-rt-worker``), which only a real server shows;
    ``normal`` leaves the policy serve was started with (this test's)."""
    mine = os.sched_getscheduler(0)
    batch = os.SCHED_BATCH if mine == os.SCHED_OTHER else mine  # an operator's choice: kept
    for policy, expected in (("batch", batch), ("normal", mine)):
        with ServerProcess("--workers", "2", "--scheduling", policy) as server:
            assert server.proc is not None
            workers = server.worker_pids()
            assert len(workers) >= 2
            seen = [_policies(pid) for pid in [server.proc.pid, *workers]]
            assert any("tokio-rt-worker" in threads for threads in seen), seen
            assert all(p == {expected} for threads in seen for p in threads.values()), seen
            assert "threads scheduled as SCHED_" in server.output()
