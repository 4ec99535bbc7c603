"""The load generator says when a run did not work, and why, and exits non-zero:
the README's load-testing commands against a server with its default limits. Real
processes: ``sse-fast loadgen`` and a user's pytest as typed, against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sse_fast.testing import ServerProcess, wait_for

from ..support.waiting import until

# one of three lanes of the load tools' tests, which wait on timed runs most: xdist
# hands the groups out first, so one worker runs the lane from the start beside the
# CPU-heavy groups (tests/support/processes.py)
pytestmark = pytest.mark.xdist_group("tools_loadgen")

LOADGEN = [sys.executable, "-m", "sse_fast.loadgen", "--processes", "1", "--sources", "1"]
SHORT = ["--rate", "5", "--duration", "2", "--warmup", "0.5"]


def run_loadgen(port: int, *args: str, token: str | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSE_FAST_PUBLISH_TOKEN"}
    if token is not None:
        env["SSE_FAST_PUBLISH_TOKEN"] = token
    done = subprocess.run(
        [*LOADGEN, "--port", str(port), *SHORT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.processes("sse-fast loadgen and a user's pytest as typed, against real servers")
def test_refused_connections_and_publishes_fail_the_run_with_the_reason() -> None:
    defaults = {  # what a fresh `sse-fast serve` does (the test servers relax these)
        "max_connections_per_ip": 1000,
        "connect_rate_per_ip": 100,
        "allow_anonymous_publish": 0,
        "publish_token": "secret",
    }
    with ServerProcess(**defaults) as server:
        code, output = run_loadgen(server.port, "--connections", "600")
    assert code == 1, output
    assert "connections failed" in output and "told to come back (connect-rate)" in output
    assert "SSE_FAST_CONNECT_RATE_PER_IP=0" in output
    assert "publish(es) failed" in output and "HTTP 401" in output
    assert "--token" in output


@pytest.mark.processes("sse-fast loadgen and a user's pytest as typed, against real servers")
def test_a_run_that_works_exits_0_and_the_token_is_sent() -> None:
    with ServerProcess(allow_anonymous_publish=0, publish_token="secret") as server:
        code, output = run_loadgen(server.port, "--connections", "200", token="secret")
        assert code == 0, output
        assert "loadgen:" not in output
        code, output = run_loadgen(server.port, "--connections", "50", "--token", "wrong")
        assert code == 1 and "HTTP 401" in output


@pytest.mark.processes("sse-fast loadgen and a user's pytest as typed, against real servers")
def test_nothing_listening_is_named() -> None:
    with ServerProcess() as server:
        port = server.port
    code, output = run_loadgen(port, "--connections", "10")
    assert code == 1 and "refused" in output and "is the server running" in output
    # no server's memory to report, said once, with what to do
    assert output.count(f"no process listening on port {port}") == 1
    assert "--server-pid" in output and " rss=-" in output


def test_lost_or_missing_events_fail_the_run() -> None:
    """The checks a server alone cannot provoke on demand: loss and shortfall."""
    import dataclasses

    from sse_fast.loadgen import Result

    numbers = {
        f.name: 0
        for f in dataclasses.fields(Result)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    clean = Result(
        **{
            **numbers,
            "target": "t",
            "connections": 10,
            "connected": 10,
            "published": 5,
            "expected": 50,
            "delivered": 50,
        }
    )
    assert clean.problems() == []
    lossy = dataclasses.replace(clean, lost=3, delivered=47)
    assert lossy.problems() == [
        "3 event(s) lost and 0 duplicated",
        "delivered 47 of 50 expected events",
    ]
    # client loops late by a second or more: a warning with what to do, not a failure
    assert clean.warnings() == []
    assert dataclasses.replace(clean, client_lag_max_ms=999.0).warnings() == []
    lagging = dataclasses.replace(clean, client_lag_max_ms=37_661.0)
    assert lagging.problems() == []
    (late,) = lagging.warnings()
    assert late.startswith("the load generator's client processes ran up to 37.7 s late")
    assert "fewer connections" in late


@pytest.mark.processes("sse-fast loadgen and a user's pytest as typed, against real servers")
def test_sse_fast_loadgen_is_the_same_tool() -> None:
    sse_fast = os.path.join(os.path.dirname(sys.executable), "sse-fast")
    done = subprocess.run([sse_fast, "loadgen", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: sse-fast loadgen")
    assert "--connections" in done.stdout and "--token" in done.stdout
    with ServerProcess() as server:
        done = subprocess.run(
            [
                sse_fast,
                "loadgen",
                "--port",
                str(server.port),
                "--processes",
                "1",
                "--sources",
                "1",
                "--connections",
                "100",
                *SHORT,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "delivered=" in done.stdout and "lost=0" in done.stdout
    # every run times each connection's connect and first event (probes while
    # connecting), and finds the server's memory by its port
    assert re.search(r" connect=[0-9.]+ms/[0-9.]+ms first-event=[0-9.]+ms/", done.stdout)
    assert re.search(r" rss=[0-9.]+MB \([0-9.]+ KB/conn\)", done.stdout), done.stdout


@pytest.mark.processes("sse-fast loadgen and a user's pytest as typed, against real servers")
def test_the_server_fixture_works_in_a_users_own_tests(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["sse_fast.testing"]\n')
    (tmp_path / "test_mine.py").write_text(
        "import asyncio\n"
        "from sse_fast.testing import ServerProcess, collect\n\n"
        "def test_publish_reaches_a_stream(sse_fast_server: ServerProcess) -> None:\n"
        "    async def main() -> None:\n"
        "        client = sse_fast_server.client('mine')\n"
        "        await client.connect()\n"
        '        status, _, _ = await sse_fast_server.publish(b\'{"topic":"mine","data":1}\')\n'
        "        assert status == 200\n"
        "        assert [e.data for e in await collect(client, 1)] == ['1']\n"
        "        client.close()\n"
        "    asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_no_test_imports_the_benchmarks() -> None:
    """The tests use the package's tools, never scripts from benches/."""
    tests = Path(__file__).parents[1]
    offenders = [
        f"{path.name}:{n}"
        for path in sorted(tests.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*(from benches[. ]|import benches\b)", line)
    ]
    assert offenders == []


def test_target_is_no_option_of_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    """The package never imports benches: ``--target`` is ``benches.loadgen_target``'s
    (its hidden pointer there was removed in 0.1.0: CHANGELOG.md)."""
    from sse_fast.loadgen import main

    with pytest.raises(SystemExit) as exit:
        main(["--target", "sse_fast-1w"])
    assert exit.value.code == 2
    assert "unrecognized arguments: --target sse_fast-1w" in capsys.readouterr().err


def test_run_load_takes_options_or_keywords_not_unknown_ones() -> None:
    from sse_fast.loadgen import LoadOptions, run_load

    with pytest.raises(TypeError, match="connectoins"):
        run_load(host="127.0.0.1", port=1, name="t", connectoins=1, rate=1, duration=1)
    options = LoadOptions(host="127.0.0.1", port=1, name="t", connections=1, rate=1, duration=1)
    with pytest.raises(TypeError, match="not both"):
        run_load(options, rate=2)


@pytest.mark.processes("sse-fast loadgen and a user's pytest as typed, against real servers")
def test_several_topics_and_publishers_lose_nothing() -> None:
    """Sequence numbers are per publisher and topic: a subscriber sees its topic's
    events only, and counts no gap where there is none."""
    with ServerProcess() as server:
        code, output = run_loadgen(
            server.port, "--connections", "60", "--topics", "3", "--publishers", "2"
        )
    assert code == 0, output
    assert re.search(r"x 3 topic\(s\) published=\d+ delivered=(\d+)/\1 ", output), output
    assert " lost=0 not-delivered-not-lost=0 may-have-been-published=0 " in output
    assert " dup=0 " in output


def test_probes_go_out_by_default_only_where_they_are_no_load_of_their_own() -> None:
    from sse_fast.loadgen._load_options import PROBED_TOPICS, LoadOptions

    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 8000,
        "name": "x",
        "connections": 10,
        "rate": 1.0,
        "duration": 1.0,
    }
    assert LoadOptions(**base).probing
    assert LoadOptions(**base, topics=PROBED_TOPICS).probing
    # a probe per topic every 0.1 s over thousands of topics would be a load test of its own
    assert not LoadOptions(**base, topics=PROBED_TOPICS + 1).probing
    assert LoadOptions(**base, topics=PROBED_TOPICS + 1, probe=True).probing
    assert LoadOptions(**base, topics=PROBED_TOPICS + 1, first_event_probe=True).probing
    assert not LoadOptions(**base, probe=False).probing
    assert not LoadOptions(**base, no_publish=True).probing


@pytest.mark.processes("sse-fast loadgen and a user's pytest as typed, against real servers")
def test_loadgen_subscribes_by_pattern_and_counts_each_pattern_as_one_sequence(
    tmp_path: Path,
) -> None:
    """``--pattern-subtopics 3``: each client asks for ``<topic>/*`` and the publishes go
    to ``<topic>/0..2`` in turn; a real server delivers them all, none counted lost
    (one sequence per pattern), and its /metrics counts the pattern streams."""
    with ServerProcess() as server:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sse_fast.loadgen",
                "--port",
                str(server.port),
                "--connections",
                "40",
                "--topics",
                "4",
                "--rate",
                "40",
                "--duration",
                "2",
                "--warmup",
                "1",
                "--drain",
                "1",
                "--pattern-subtopics",
                "3",
                "--json",
                str(tmp_path / "result.json"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        metrics = asyncio.run(server.get("/metrics"))[2].decode()
    found = json.loads((tmp_path / "result.json").read_text())
    assert found["lost"] == 0 and found["delivered"] == found["expected"] > 0
    # subtopics 1 and 2 are created by the measured publishes: each stream joins both
    (joins,) = [line for line in metrics.splitlines() if line.startswith("sse_fast_pattern_joins")]
    assert int(joins.split()[1]) >= 80, joins


def test_a_subscriber_sends_its_request_with_the_handshake_over_loopback() -> None:
    """``connect_one`` writes the request in the step that connects: a storm's clients
    starved of CPU do not leave their connections silent (``_subscribers.py``)."""
    from sse_fast.loadgen._subscribers import _send_with_connect, bound_socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        sock = bound_socket("127.0.0.1")
        try:
            request = b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n"
            assert _send_with_connect(sock, server.getsockname(), request) == len(request)
            peer, _ = server.accept()
            with peer:
                assert peer.recv(100) == request
        finally:
            sock.close()
        port = server.getsockname()[1]
    refused = bound_socket("127.0.0.1")
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        _send_with_connect(refused, ("127.0.0.1", port), b"GET / HTTP/1.1\r\n\r\n")
    refused.close()


def test_a_connection_closed_or_reset_before_any_response_is_named_so() -> None:
    from sse_fast.loadgen._stats import ProcessStats
    from sse_fast.loadgen._subscribers import Subscriber, connect_one

    async def against(answer: str) -> dict[str, int]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            if answer == "reset":  # SO_LINGER 0: close() resets
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        stats = ProcessStats()
        address = server.sockets[0].getsockname()
        async with server:
            got = await connect_one(
                address, "/events", "127.0.0.1", stats, lambda: Subscriber(stats)
            )
        assert got is None
        return stats.connect_failures

    assert asyncio.run(against("close")) == {"closed before any response": 1}
    assert asyncio.run(against("reset")) == {"reset before any response": 1}


def test_a_compressed_stream_it_cannot_read_is_named_and_ends() -> None:
    """A Content-Encoding it cannot decode (``br``): a failed connect saying so, not a
    stream. A gzip stream whose bytes break off into garbage after its first events
    (its middle, not its end): the events before are read, the stream then ends as not
    a stream (``foreign``), saying why."""
    import zlib

    from sse_fast.loadgen._stats import ProcessStats
    from sse_fast.loadgen._subscribers import Subscriber, connect_one

    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: %s\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    async def against(coding: bytes, body: list[bytes]) -> tuple[ProcessStats, Any]:
        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head % coding + b"".join(chunk(part) for part in body))
            await done.wait()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        stats = ProcessStats()
        address = server.sockets[0].getsockname()
        async with server:
            got = await connect_one(
                address, "/events", "127.0.0.1", stats, lambda: Subscriber(stats)
            )
            if got is not None:
                await wait_for(lambda: got.lost_how != "", 10, what="the stream's end")
            done.set()
        return stats, got

    stats, got = asyncio.run(against(b"br", [b"\x0b\x02\x80"]))
    assert got is None and stats.connect_failures == {"cannot decode Content-Encoding 'br'": 1}

    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    good = compressor.compress(b'data: {"t": 1.0, "s": 0, "w": "p"}\n\n')
    good += compressor.flush(zlib.Z_SYNC_FLUSH)
    stats, got = asyncio.run(against(b"gzip", [good, b"\xff" * 40]))
    assert got is not None
    assert got.lost_how.startswith("undecodable body (error: ") and got.status == 0
    assert stats.foreign == 1 and got.delivered  # the event before the damage was read


def test_a_publisher_does_not_send_on_a_connection_the_server_closed_while_idle() -> None:
    """A restart closes the publisher's kept-alive connection between two publishes:
    the next one goes on a new connection, not into the closed one (where its answer
    would be lost and its event counted as published though it never was)."""
    from sse_fast.loadgen._publishers import KeepAlivePublisher

    async def run() -> tuple[list[bool], int]:
        connections = ended = 0
        answered = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections, ended
            connections += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            await answered.wait()  # idle after its answer (the publisher has it), kept alive
            writer.close()  # then closed, as by a server going away
            ended += 1

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        publisher = KeepAlivePublisher(
            "127.0.0.1", port, lambda topic, data: ("POST", "/publish", {}, data.encode())
        )
        async with server:
            results = [await publisher.publish("t", "1")]
            answered.set()
            await wait_for(publisher._gone, what="the server's close at the publisher")
            results.append(await publisher.publish("t", "2"))
            publisher.close()
            await wait_for(lambda: ended == connections, what="the server's side closed too")
        return results, connections

    assert asyncio.run(run()) == ([True, True], 2)


def test_a_publisher_keeps_its_connection_alive() -> None:
    from sse_fast.loadgen._publishers import KeepAlivePublisher

    async def run() -> tuple[list[bool], int]:
        connections = ended = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections, ended
            connections += 1
            with contextlib.suppress(asyncio.IncompleteReadError):  # the publisher's close
                while head := await reader.readuntil(b"\r\n\r\n"):
                    length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
                    await reader.readexactly(length)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    await writer.drain()
            writer.close()
            ended += 1

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        publisher = KeepAlivePublisher(
            "127.0.0.1", port, lambda topic, data: ("POST", "/publish", {}, data.encode())
        )
        async with server:
            results = [await publisher.publish("t", str(n)) for n in range(3)]
            publisher.close()
            await wait_for(lambda: ended == connections, what="the server's side closed too")
        return results, connections

    assert asyncio.run(run()) == ([True, True, True], 1)


def test_a_socket_the_process_cannot_have_is_a_connect_failure_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At its open-file limit a client process cannot make a socket (EMFILE): that
    connect fails, counted by a name that says why, and returns None, so the reconnect
    loop (``_clients.reconnect_closed``) tries again. Raised, it ended the loop's task
    without a word and the stream never came back."""
    import errno

    from sse_fast.loadgen import _subscribers
    from sse_fast.loadgen._stats import ProcessStats

    def no_socket(source: str) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_subscribers, "bound_socket", no_socket)
    stats = ProcessStats()

    async def run() -> object:
        return await _subscribers.connect_one(
            ("127.0.0.1", 9), "/events", "127.0.0.1", stats, lambda: _subscribers.Subscriber(stats)
        )

    assert asyncio.run(run()) is None
    assert stats.connect_errors == 1
    assert stats.connect_failures == {"OSError EMFILE: Too many open files": 1}


def test_a_stream_whose_response_ends_is_ended_though_its_connection_stays() -> None:
    """As a browser's ``EventSource``: the last chunk ends the stream (a server keeps
    the connection for its next request), and a reconnect answered only with an end
    (a server starting or draining says when to come back) is not counted as back."""
    from sse_fast.loadgen._stats import ProcessStats
    from sse_fast.loadgen._subscribers import Subscriber, connect_one

    frame = b"retry: 100\nevent: sse-fast-disconnect\ndata: {}\n\n"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(frame), frame)

    async def run() -> tuple[list[str], int, int]:
        left: list[bool] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + chunked
            )
            await writer.drain()
            with contextlib.suppress(ConnectionError):
                await reader.read()  # kept open until the client closes it
            left.append(True)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        stats = ProcessStats()
        ended: list[str] = []

        def make() -> Subscriber:
            subscriber = Subscriber(stats, on_lost=lambda s: ended.append(s.lost_how))
            subscriber.requested_at = -1.0  # a reconnect
            subscriber.back_at = -1.0  # of a stream the server ended: counted at its answer
            return subscriber

        address = server.sockets[0].getsockname()
        async with server:
            got = await connect_one(address, "/events", "127.0.0.1", stats, make)
            assert got is not None
            await wait_for(lambda: ended, what="the end of the response told")
            assert got.retry_seconds(3.0) == 0.1
            # the client's transport calls connection_lost before its socket closes: once
            # the server read the close, a second count of it would have been made
            await wait_for(lambda: left, what="the client's close at the server")
        return ended, stats.closed, stats.reconnects_on_close

    assert asyncio.run(run()) == (["ended"], 1, 0)


def test_a_stream_is_back_when_its_answer_is_read_not_when_its_task_runs() -> None:
    """A reconnect of a stream the server ended counts as back in the callback that reads
    its 200 (with the time), whether or not the task that connected it has run since: in
    a storm a starved client process ran those tasks tens of seconds late, and its final
    report counted 76,800 of 100,000 streams back that were all open and delivering. A
    come-back (a 200 ended at once, no event) is taken back; another connection (a first
    connect) is not counted."""
    from sse_fast.loadgen._stats import ProcessStats
    from sse_fast.loadgen._subscribers import Subscriber

    class Transport:
        def close(self) -> None:
            pass

    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    event = chunk(b'data: {"t": 1.0, "s": 0, "w": "p"}\n\n')
    come_back = chunk(b"event: sse-fast-disconnect\ndata: {}\nretry: 2000\n\n") + b"0\r\n\r\n"

    async def run() -> tuple[int, ...]:
        stats = ProcessStats()
        back, told, first = (Subscriber(stats) for _ in range(3))
        for subscriber in (back, told, first):
            subscriber.connection_made(Transport())  # type: ignore[arg-type]
        back.back_at = told.back_at = -1.0  # reconnects of ended streams
        before = time.time()
        back.data_received(head + event)
        counted = stats.reconnects_on_close  # no await in between: no task ran
        told.data_received(head + come_back)
        first.data_received(head + event)
        return (
            counted,
            stats.reconnects_on_close,
            stats.come_backs,
            int(back.back_at >= before),
            int(first.back_at == 0.0),
        )

    assert asyncio.run(run()) == (1, 1, 1, 1, 1)


def test_a_client_process_reports_how_late_its_loop_ran() -> None:
    """``loop_lag_max``: a loop blocked for 0.4 s is reported at least that late (the
    times a starved client process takes are late by as much)."""
    from sse_fast.loadgen._clients import _ClientProcess

    async def run() -> float:
        client = _ClientProcess("127.0.0.1", 1, [], [], None, "1.1", {})
        watcher = asyncio.ensure_future(client.watch_lag(every=0.05))
        await asyncio.sleep(0)  # the watcher's first look starts
        # pace: the subject: the loop blocked 0.4 s, as by a burst of work
        time.sleep(0.4)
        await wait_for(lambda: client.stats.loop_lag_max, what="the watcher's look after it")
        client.exiting = True
        await watcher
        return client.stats.loop_lag_max

    assert 0.35 <= asyncio.run(run()) < 5


def test_a_gap_at_a_publish_that_got_no_answer_is_not_lost() -> None:
    """The publisher lists (``u``) the sequence numbers whose publish got no answer (a
    server gone mid-request may or may not have taken them): a gap there is not lost,
    one anywhere else is."""
    from sse_fast.loadgen._stats import ProcessStats
    from sse_fast.loadgen._subscribers import Subscriber

    def frames(*events: dict[str, object]) -> bytes:
        return b"".join(b"data: %s\n\n" % json.dumps(e).encode() for e in events)

    async def run() -> ProcessStats:
        stats = ProcessStats()
        subscriber = Subscriber(stats)
        subscriber.status = 200
        subscriber.on_body(frames({"t": 1.0, "w": 0, "s": 0}, {"t": 1.0, "w": 0, "s": 2, "u": [1]}))
        subscriber.on_body(frames({"t": 1.0, "w": 0, "s": 5, "u": [1, 3]}))  # 4 is lost
        return stats

    stats = asyncio.run(run())
    assert (stats.lost, stats.duplicates) == (1, 0)


@pytest.mark.processes("sse-fast loadgen and a user's pytest as typed, against real servers")
def test_a_warmup_publish_that_falls_in_the_window_counts_as_published() -> None:
    """At 0.5 events/s a warmup of 0.5 s keeps its second slot, 2 s in: past the
    window's start (1 s in). The clients count that event; the publisher must too,
    or ``delivered`` exceeds ``expected`` (600,000 of 500,000 in a 100k run)."""
    from sse_fast.loadgen import run_load

    with ServerProcess() as server:
        result = run_load(
            host="127.0.0.1",
            port=server.port,
            connections=3,
            rate=0.5,
            warmup=0.5,
            duration=3.0,
            processes=1,
            sources=1,
            probe=False,
        )
    assert result.published >= 3  # the warmup's late slot and the window's own
    assert result.delivered == result.expected == result.published * 3
    assert result.lost == 0 and result.duplicates == 0


@pytest.mark.processes("sse-fast loadgen's client processes against a real server")
def test_finding_the_servers_processes_takes_nothing_from_the_window() -> None:
    """Finding the server's processes by port reads every process's descriptors: on a
    loaded machine a second or more. Done on the loop at the window's start, it once took
    the whole 1-s window (nothing published, the run failed). Here the finding lasts
    until the server has taken a publish made while it runs (10 s at most): on the loop,
    none could be made, and the window would pass; beside it, the run publishes on, and
    the window still publishes at its rate."""
    from sse_fast.loadgen import run_load

    calls = 0

    def published() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as answer:
            found = re.search(rb"^sse_fast_published_total (\d+)$", answer.read(), re.M)
        assert found is not None
        return int(found.group(1))

    def slow_server_pids() -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 3:  # the one made as the window begins (after base and idle RSS)
            before = published()
            with contextlib.suppress(AssertionError):  # the run's figures then say it
                until(lambda: published() > before, 10, "a publish during the finding")
        return [os.getpid()]

    with ServerProcess() as server:
        result = run_load(
            host="127.0.0.1",
            port=server.port,
            connections=2,
            rate=10,
            warmup=0.2,
            duration=1.0,
            processes=1,
            sources=1,
            probe=False,
            server_pids=slow_server_pids,
        )
    assert calls >= 3
    assert result.published >= 3  # 10 a second through a 1-s window (1 when it was taken)
    assert result.delivered == result.expected == result.published * 2


def compressed_run(coding: str, *extra: str) -> tuple[str, dict[str, Any]]:
    """``sse-fast loadgen`` with 20 streams of one topic asking for ``coding`` against a
    real server (events of 300 bytes): its output, and its result (``--json``); the run
    must succeed."""
    with ServerProcess() as server:
        code, output = run_loadgen(
            server.port,
            "--connections",
            "20",
            "--payload-bytes",
            "300",
            "--compressed",
            coding,
            *extra,
            "--json",
            "/dev/stdout",
        )
    assert code == 0, output
    result: dict[str, Any] = json.loads(output[output.index("{") : output.rindex("}") + 1])
    return output, result


@pytest.mark.processes("sse-fast loadgen's client processes against a real server")
@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_compressed_streams_are_decoded_and_their_bytes_on_the_wire_reported(
    coding: str,
) -> None:
    """``--compressed``: the streams ask for a coding, are decoded as they come (every
    event counted once, none lost), and the result says the coding and the bytes on
    the wire per event beside the decoded ones (a topic of 20 streams: the server's
    shared compressor, a fraction of the bytes)."""
    output, result = compressed_run(coding)
    assert result["content_codings"] == {coding: 20}
    assert result["lost"] == 0 and result["delivered"] == result["expected"] > 0
    assert 0 < result["wire_bytes_per_event"] < result["decoded_bytes_per_event"] / 3
    assert f"wire={result['wire_bytes_per_event']:,.0f}B/ev ({coding};" in output


@pytest.mark.processes("sse-fast loadgen's client processes against a real server")
def test_a_sample_reads_its_events_and_the_others_count_their_bytes() -> None:
    """``--read-every 5``: 4 of 20 streams read their events (deliveries, loss and
    latency are theirs: expected is the published events times 4); the other 16 take
    their bytes in, and as many bytes per event came to them as to the readers (the
    same compressed stream). No per-core figure: the server delivered to all 20."""
    output, result = compressed_run("zstd", "--read-every", "5")
    assert result["connected"] == 20 and result["reading_connections"] == 4
    assert result["lost"] == 0 and result["delivered"] == result["expected"]
    assert result["expected"] == result["published"] * 4 > 0
    wire, drained = result["wire_bytes_per_event"], result["drained_bytes_per_event"]
    assert 0 < wire < result["decoded_bytes_per_event"] / 3
    assert abs(drained - wire) < wire * 0.1, (drained, wire)
    assert result["delivered_per_server_core_second"] is None
    assert f"read-by=4 (others {drained:,.0f}B/ev)" in output


def test_reading_a_sample_refuses_what_judges_every_stream() -> None:
    """``read_every`` does not mix with the features that judge every stream (slow
    consumers, reconnects, a connection storm): the error names them."""
    from sse_fast.loadgen._cli import build_parser, check_args
    from sse_fast.loadgen._load_options import LoadOptions

    with pytest.raises(ValueError, match="slow_every, reconnect_on_close"):
        LoadOptions(
            connections=10, rate=1, duration=1, read_every=2, slow_every=3, reconnect_on_close=True
        )
    with pytest.raises(ValueError, match="read_every must be 1"):
        LoadOptions(connections=10, rate=1, duration=1, read_every=0)
    parser = build_parser("loadgen")
    args = parser.parse_args(["--read-every", "4", "--reconnect-on-close"])
    with pytest.raises(SystemExit):
        check_args(parser, args)
