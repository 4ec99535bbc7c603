"""Mirror mode (``sse-fast mirror --upstream URL``, sse_fast/app/_upstream.py).

The republishing rules in process (ids, transforms, a broker that refuses for
a while, an upstream that lost events); then real processes: a relay in front
of a second ``sse-fast serve`` (on Redis, so its history survives) that is
killed and restarted, in front of a plain Starlette SSE app under uvicorn that
is restarted, the reading worker killed under two workers, an upstream that
refuses, a transform given by name, and the edge in an interpreter without httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from sse_fast._core.request import PublishRequest
from sse_fast.app import _upstream as upstream_module
from sse_fast.app._upstream import Upstream
from sse_fast.cli import main
from sse_fast.client import Disconnect, EventStream, Missed, ReceivedEvent, connect
from sse_fast.hub import Hub
from sse_fast.publishing import PublishError
from sse_fast.settings import Settings, SettingsError
from sse_fast.testing import (
    HOST,
    RedisServer,
    ServerProcess,
    free_port,
    http_request,
    wait_for,
)

from ..conftest import forgive
from ..support.mirror_transform import odd_only_upper, route_by_parity
from ..support.waiting import until

# ------------------------------------------------------------------ settings


def test_settings_say_what_is_wrong() -> None:
    assert Settings(upstream="http://o:1/events?topic=news").upstream_topic == "news"
    assert (
        Settings(upstream="https://o/e?topic=a&topic=b", upstream_topic="c").upstream_topic == "c"
    )
    with pytest.raises(SettingsError, match="http:// or https:// URL"):
        Settings(upstream="ftp://o/events")
    with pytest.raises(SettingsError, match="pass --upstream-topic"):
        Settings(upstream="http://o/events?topic=a&topic=b")
    with pytest.raises(SettingsError, match="not a valid topic name"):
        Settings(upstream="http://o/e", upstream_topic="a b")
    with pytest.raises(SettingsError, match="module:callable"):
        Settings(upstream="http://o/e?topic=a", upstream_transform="nocolon")


def test_mirror_command_needs_an_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mirror", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sse-fast: say which stream to mirror with --upstream URL")


def test_the_old_relay_command_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    """``sse-fast relay`` was mirror mode's name until 0.1.0 (CHANGELOG.md)."""
    with pytest.raises(SystemExit) as exit:
        main(["relay", "--port", "1"])
    assert exit.value.code == 2
    assert "invalid choice: 'relay' (choose from 'serve', 'mirror', 'loadgen')" in (
        capsys.readouterr().err
    )


def test_a_transform_that_cannot_be_loaded_fails_startup() -> None:
    settings = Settings(upstream="http://o/e?topic=a", upstream_transform="tests.nothing:here")
    with pytest.raises(RuntimeError, match=r"cannot import tests\.nothing"):
        Upstream(settings.relay_mode, settings.limits, Hub(settings))
    settings = dataclasses.replace(
        settings, upstream_transform="tests.support.mirror_transform:missing"
    )
    with pytest.raises(RuntimeError, match="has no missing"):
        Upstream(settings.relay_mode, settings.limits, Hub(settings))


# ------------------------------------------------------------------ in process


class Recorder:
    """``hub.publish`` that records, refusing with 503 ``refusals`` times first."""

    def __init__(self, refusals: int = 0) -> None:
        self.published: list[PublishRequest] = []
        self.refusals = refusals

    async def __call__(self, requests: list[PublishRequest], **_: Any) -> list[str]:
        if self.refusals:
            self.refusals -= 1
            raise PublishError("the relay is away", status=503)
        self.published += requests
        return [r.id or "x" for r in requests]


def upstream(transform: str = "", refusals: int = 0) -> tuple[Upstream, Recorder]:
    settings = Settings(upstream="http://o/e?topic=news", upstream_transform=transform)
    hub = Hub(settings)
    recorder = Recorder(refusals)
    hub.publish = recorder  # type: ignore[method-assign]
    return Upstream(settings.relay_mode, settings.limits, hub), recorder


def test_events_keep_name_id_and_data_and_ids_not_sent_are_ours() -> None:
    relay, recorder = upstream()

    async def main() -> None:
        await relay.republish(ReceivedEvent("message", "a\nb", "1"))
        await relay.republish(ReceivedEvent("update", "{}", "2"))
        await relay.republish(ReceivedEvent("note", "no id of its own", "2"))  # the id carried over
        await relay.republish(ReceivedEvent("message", "none at all", ""))

    asyncio.run(main())
    assert recorder.published == [
        PublishRequest(("news",), "a\nb", None, "1"),
        PublishRequest(("news",), "{}", "update", "2"),
        PublishRequest(("news",), "no id of its own", "note", None),
        PublishRequest(("news",), "none at all", None, None),
    ]
    assert relay.hub.metrics.upstream_events_total == 4


def test_transforms_drop_change_and_route() -> None:
    relay, recorder = upstream("tests.support.mirror_transform:odd_only_upper")
    asyncio.run(relay.republish(ReceivedEvent("tick", "1", "1")))
    asyncio.run(relay.republish(ReceivedEvent("tick", "2", "2")))
    assert recorder.published == [PublishRequest(("news",), "TICK 1", "tick", "1")]
    assert relay.hub.metrics.upstream_dropped_total == 1

    relay, recorder = upstream(
        "tests.support.mirror_transform:route_by_parity"
    )  # async, a document
    for n in (1, 2):
        asyncio.run(relay.republish(ReceivedEvent("tick", str(n), str(n))))
    assert [(r.topics, r.data, r.id) for r in recorder.published] == [
        (("odd",), {"n": 1}, "1"),
        (("even",), {"n": 2}, "2"),
    ]
    assert odd_only_upper and route_by_parity  # the functions the server loads by name


def test_a_failing_transform_costs_that_event_only(caplog: pytest.LogCaptureFixture) -> None:
    relay, recorder = upstream()
    answers: list[Any] = [
        ZeroDivisionError("boom"),
        asyncio.CancelledError(),  # out of the transform's own awaits: its failure, not a stop
        42,
        {"data": "x", "event": "sse-fast-missed"},
        ReceivedEvent("message", "fine", "9"),
    ]

    def transform(event: ReceivedEvent) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    relay.transform = transform
    for n in range(5):
        asyncio.run(relay.republish(ReceivedEvent("message", str(n), str(n))))
    assert [r.data for r in recorder.published] == ["fine"]
    assert relay.hub.metrics.upstream_errors_total == 4
    logged = caplog.text
    assert "boom" in logged
    assert "the transform returned int" in logged
    assert "reserved" in logged  # the document is checked as POST /publish checks it


def test_a_lock_the_file_system_refuses_is_said_and_tried_again(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``flock`` on the upstream lock fails with ``ENOLCK`` (NFS without locks) twice: said
    once, tried again, and the worker reads once it takes the lock (the election ended
    at the first, and with it this worker's mirror, silently)."""
    settings = Settings(upstream="http://o/e?topic=news")
    relay = Upstream(settings.relay_mode, settings.limits, Hub(settings), lock=str(tmp_path / "l"))
    flock = upstream_module.fcntl.flock
    refusals = 0

    def refusing_twice(fd: int, operation: int) -> None:
        nonlocal refusals
        if refusals < 2:
            refusals += 1
            raise OSError(errno.ENOLCK, "No locks available")
        flock(fd, operation)

    monkeypatch.setattr(upstream_module.fcntl, "flock", refusing_twice)
    monkeypatch.setattr(upstream_module, "LOCK_POLL", 0.001)
    asyncio.run(asyncio.wait_for(relay._elect(), 10))
    try:
        assert refusals == 2 and relay.reader.reading
        said = [r.getMessage() for r in caplog.records if "cannot be taken" in r.getMessage()]
        assert len(said) == 1 and "No locks available" in said[0], said
        forgive(caplog, "cannot be taken")
    finally:
        assert relay._lock_fd is not None
        os.close(relay._lock_fd)


def test_a_refusing_broker_delays_the_event_not_loses_it(caplog: pytest.LogCaptureFixture) -> None:
    relay, recorder = upstream(refusals=3)
    asyncio.run(asyncio.wait_for(relay.republish(ReceivedEvent("message", "kept", "5")), 5))
    assert [r.data for r in recorder.published] == ["kept"]
    assert caplog.text.count("cannot publish upstream events yet") == 3


def test_an_upstream_that_lost_events_is_passed_on() -> None:
    relay, recorder = upstream()
    missed = Missed("sse-fast-missed", "{}", "7", None, "evicted", "3")
    asyncio.run(relay.missed(missed))
    (marker,) = recorder.published
    assert marker.event == "sse-fast-missed"
    assert orjson.loads(marker.data) == {
        "reason": "upstream-missed",
        "upstream_reason": "evicted",
        "last_event_id": None,
    }
    assert relay.hub.metrics.upstream_missed_total == 1


# ------------------------------------------------------------------ real processes


class Subscriber:
    """An sse_fast.client stream in its own thread (the servers are started here)."""

    def __init__(self, port: int, topic: str, until: int) -> None:
        self.data: list[str] = []
        self.control: list[ReceivedEvent] = []
        self.until = until
        self.url = f"http://{HOST}:{port}/events"
        self.topic = topic
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.task = self.loop.create_task(self._read())
        try:
            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(self.task)
        finally:  # as asyncio.run: what async generators are left closed before the loop
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _read(self) -> None:
        async def read() -> None:
            async with (
                connect(self.url, [self.topic], retry=0.3, max_delay=1, read_timeout=5) as stream,
                contextlib.aclosing(aiter(stream)) as events,  # type: ignore[type-var]
            ):
                async for event in events:
                    if isinstance(event, (Missed, Disconnect)):
                        self.control.append(event)
                    elif event.event != "message" or event.data:
                        self.data.append(event.data)
                        if len(self.data) >= self.until:
                            return

        await asyncio.wait_for(read(), 90)

    def wait(self, count: int, timeout: float = 30) -> None:
        until(lambda: len(self.data) >= count, timeout, f"{count} events reach the subscriber")

    def join(self) -> None:
        self.thread.join(30)
        if self.thread.is_alive():  # stopped, so that no client outlives the test
            if self.task is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)
            self.thread.join(5)
            raise AssertionError(
                f"{len(self.data)} of {self.until} events in 30 s; "
                f"last {self.data[-3:]}; said {self.control[-3:]}"
            )


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, _, body = asyncio.run(http_request(HOST, port, "GET", "/readyz"))
    return status, json.loads(body)


def wait_ready(port: int, ready: bool, timeout: float = 15) -> dict[str, Any]:
    def answer() -> dict[str, Any] | None:
        status, body = readyz(port)
        return body if (status == 200) == ready else None

    return until(answer, timeout, f"/readyz says {'ready' if ready else 'not ready'}")


def wait_subscribed(port: int, topic: str, timeout: float = 30) -> None:
    """Wait until the server at ``port`` holds a stream on ``topic`` (its ``/stats``):
    a subscriber's thread connects in its own time, and an event published before it
    is subscribed is not for it."""

    def subscribed() -> bool:
        _, _, body = asyncio.run(http_request(HOST, port, "GET", "/stats"))
        topics = json.loads(body).get("topics", {})
        return bool(topics.get(topic, {}).get("subscribers", 0) >= 1)

    until(subscribed, timeout, f"a stream on {topic!r}")


def publish(port: int, first: int, count: int) -> None:
    body = orjson.dumps(
        {"events": [{"topic": "news", "data": str(n)} for n in range(first, first + count)]}
    )
    status, _, answer = asyncio.run(
        http_request(HOST, port, "POST", "/publish", body, {"Content-Type": "application/json"})
    )
    assert status == 200, answer


def metric(port: int, name: str) -> float:
    _, _, body = asyncio.run(http_request(HOST, port, "GET", "/metrics"))
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")


#: the tests of real upstreams and mirrors
MIRRORED = pytest.mark.processes(
    "real upstreams and mirrors, killed and restarted, their readiness"
)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def relay_command(upstream: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sse_fast",
        "mirror",
        "--port",
        "{port}",
        "--upstream",
        upstream,
        *extra,
    ]


@MIRRORED
def test_the_upstream_events_iterator_is_closed_when_reading_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopped while an event is being republished, the reader closes the
    stream's event iterator itself (issue 40): left to the garbage collector, its
    close is only scheduled, and on a loop that closes first Python 3.13 says
    "coroutine method 'aclose' of 'Response.aiter_bytes' was never awaited"."""
    iterators: list[Any] = []
    original = EventStream.__aiter__

    def recorded(self: EventStream) -> Any:
        iterators.append(original(self))
        return iterators[-1]

    monkeypatch.setattr(EventStream, "__aiter__", recorded)

    async def main(port: int) -> None:
        relay, _ = upstream()
        relay.url = f"http://{HOST}:{port}/events?topic=news"
        republishing = asyncio.Event()

        async def stuck(*_: Any, **__: Any) -> list[str]:
            republishing.set()
            await asyncio.Event().wait()  # the broker never answers: stopped meanwhile
            return []

        relay.hub.publish = stuck  # type: ignore[method-assign]
        await relay.start()

        # published until the relay, connected, reads one
        async def published_and_read() -> bool:
            body = orjson.dumps({"topic": "news", "data": "x"})
            await http_request(
                HOST, port, "POST", "/publish", body, {"Content-Type": "application/json"}
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(republishing.wait(), 0.2)
            return republishing.is_set()

        await wait_for(published_and_read, timeout=15, what="the relay reads a published event")
        await relay.stop()
        assert iterators
        assert all(it.ag_frame is None for it in iterators)  # closed, not suspended

    with ServerProcess(heartbeat_interval=1) as origin:
        asyncio.run(main(origin.port))


@MIRRORED
def test_relays_an_sse_fast_upstream_that_is_killed_and_restarted(
    redis_server: RedisServer,
) -> None:
    """Every event once, in order: published before, while the upstream is
    away (none: it is down) and after its restart (it resumes us from Redis,
    including what was published before we were back)."""
    port = free_port()
    origin = ("--redis-url", redis_server.url)
    upstream = ServerProcess(*origin, port=port, heartbeat_interval=1)
    with (
        upstream,
        ServerProcess(
            command=relay_command(f"http://{HOST}:{port}/events?topic=news", "--workers", "2"),
            heartbeat_interval=1,
            upstream_ready_grace=1,
        ) as relay,
    ):
        wait_ready(relay.port, True)
        subscriber = Subscriber(relay.port, "news", 300)
        wait_subscribed(relay.port, "news")
        publish(port, 0, 100)
        subscriber.wait(100)
        upstream._kill_group()
        upstream.stop()
        body = wait_ready(relay.port, False)  # away past the grace: not ready, and why
        assert body["upstream"]["state"] == "reconnecting"
        with ServerProcess(*origin, port=port, heartbeat_interval=1):
            publish(port, 100, 100)  # before the relay is back: resumed from Redis
            subscriber.wait(200)
            publish(port, 200, 100)
            subscriber.join()
            assert wait_ready(relay.port, True)["upstream"]["state"] == "connected"
            assert metric(relay.port, "sse_fast_upstream_events_total") == 300
            assert metric(relay.port, "sse_fast_upstream_reconnects_total") >= 1
            assert metric(relay.port, "sse_fast_upstream_connected") == 1
    assert subscriber.data == [str(n) for n in range(300)]
    assert subscriber.control == []


@MIRRORED
def test_relays_a_plain_starlette_app_that_restarts() -> None:
    """A plain StreamingResponse upstream under uvicorn, stopped and started
    again mid-stream: the relay resumes it with Last-Event-ID."""
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.support.plain_sse_app:app",
        "--port",
        "{port}",
        # the relay's stream never ends: without it uvicorn's stop waits for it until
        # ServerProcess kills it, 15 s later
        "--timeout-graceful-shutdown",
        "1",
    ]
    port = free_port()
    url = f"http://{HOST}:{port}/ticks?count=200&every=0.02&wait=2"  # wait: for the subscriber
    with (
        ServerProcess(command=uvicorn, port=port) as upstream,
        ServerProcess(
            command=relay_command(url, "--topic", "ticks"), heartbeat_interval=1
        ) as relay,
    ):
        subscriber = Subscriber(relay.port, "ticks", 200)
        subscriber.wait(60)
        upstream.stop(signal.SIGKILL)
        # the relay has seen it go: the restart below is one it reconnects to
        until(
            lambda: readyz(relay.port)[1].get("upstream", {}).get("state") == "reconnecting",
            15,
            "the relay says its upstream is away",
        )
        with ServerProcess(command=uvicorn, port=port):
            subscriber.join()
    assert subscriber.data == [str(n) for n in range(1, 201)]


@MIRRORED
def test_the_reading_worker_killed_another_takes_over(redis_server: RedisServer) -> None:
    port = free_port()
    with (
        ServerProcess("--redis-url", redis_server.url, port=port, heartbeat_interval=1),
        ServerProcess(
            command=relay_command(f"http://{HOST}:{port}/events?topic=news", "--workers", "2"),
            heartbeat_interval=1,
        ) as relay,
    ):
        reader = wait_ready(relay.port, True)["upstream"]["reader_pid"]
        assert reader in relay.worker_pids()
        subscriber = Subscriber(relay.port, "news", 200)
        wait_subscribed(relay.port, "news")
        publish(port, 0, 100)
        subscriber.wait(100)
        os.kill(reader, signal.SIGKILL)

        # a standby worker holds the lock and reads (or the respawned one)
        def another_reads() -> bool:
            try:
                status, body = readyz(relay.port)
            except OSError:  # the request went to the dying worker
                return False
            return status == 200 and body["upstream"]["reader_pid"] != reader

        until(another_reads, 20, "another worker reads the upstream")
        publish(port, 100, 100)
        subscriber.join()
    assert subscriber.data == [str(n) for n in range(200)]


@MIRRORED
def test_an_upstream_that_refuses_is_said_in_readyz() -> None:
    with (
        ServerProcess(heartbeat_interval=1) as upstream,
        ServerProcess(
            "--upstream",
            f"http://{HOST}:{upstream.port}/nothing-here?topic=news",
            "--upstream-max-delay",
            "1",
            ready_path="/healthz",
        ) as relay,
    ):

        def refused() -> tuple[int, dict[str, Any]] | None:
            status, body = readyz(relay.port)
            # "starting" (no upstream yet) until the worker's start is done: /healthz
            # answers before /readyz can say anything of the upstream
            return (status, body) if body.get("upstream", {}).get("state") == "refused" else None

        status, body = until(refused, 10, "/readyz says the upstream refused")
        assert status == 503
        assert "HTTP 404" in body["upstream"]["error"]
        assert "no such endpoint" in body["upstream"]["error"]


@MIRRORED
def test_a_transform_given_by_name(redis_server: RedisServer) -> None:
    with (
        ServerProcess(heartbeat_interval=1) as upstream,
        ServerProcess(
            "--upstream",
            f"http://{HOST}:{upstream.port}/events?topic=news",
            "--upstream-transform",
            "tests.support.mirror_transform:odd_only_upper",
        ) as relay,
    ):
        wait_ready(relay.port, True)
        subscriber = Subscriber(relay.port, "news", 5)
        wait_subscribed(relay.port, "news")
        publish(upstream.port, 0, 10)
        subscriber.join()
        assert metric(relay.port, "sse_fast_upstream_dropped_total") == 5
    assert subscriber.data == ["TICK 1", "TICK 3", "TICK 5", "TICK 7", "TICK 9"]


@pytest.mark.processes("an interpreter of its own, without httpx")
def test_the_edge_needs_httpx_only_in_mirror_mode() -> None:
    """httpx is not a dependency of the hub: an application that embeds it
    without httpx starts; mirror mode says what to install."""
    script = (
        "import sys\n"
        "sys.modules['httpx'] = None\n"
        "from sse_fast.app import App\n"
        "from sse_fast.settings import Settings\n"
        "App(Settings())\n"
        "try:\n"
        "    App(Settings(upstream='http://o/e?topic=a'))\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "sse_fast.client needs httpx: python -m pip install" in done.stdout
