"""sse_fast.client: the reconnecting client on httpx.

The rules (what is retried, waits, typed events, Last-Event-ID) against
httpx's mock transport, where each answer is chosen; silence and closing
against a real socket; no loss and no repeat against a real ``sse-fast serve``
that is killed and restarted mid-stream (on Redis, which keeps the history
across the restart), and an honest ``Missed`` when the restarted server has
no history. Real processes: servers killed, stopped and started again under the
client, and one at its connection limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from sse_fast.client import (
    BadStream,
    Disconnect,
    Event,
    GaveUp,
    Missed,
    StreamRefused,
    _Session,
    connect,
    connect_sync,
)
from sse_fast.testing import HOST, RedisServer, ServerProcess, free_port, http_request, wait_for

from ..support.streams import opened

# one of three lanes of the load tools' tests, which wait on timed runs most: xdist
# hands the groups out first, so one worker runs the lane from the start beside the
# CPU-heavy groups (tests/support/processes.py)
pytestmark = pytest.mark.xdist_group("tools_any_server")

SSE = {"content-type": "text/event-stream"}


def session(**kwargs: object) -> _Session:
    args: dict[str, object] = {
        "url": "http://x/events",
        "topics": (),
        "headers": None,
        "last_event_id": "",
        "retry": 1.0,
        "max_delay": 8.0,
        "max_reconnects": None,
        "max_event_size": 1 << 20,
    }
    args.update(kwargs)
    return _Session(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the rules


def test_waits_double_from_retry_up_to_the_cap_with_jitter() -> None:
    s = session(retry=1.0, max_delay=8.0)
    for bound in (1, 2, 4, 8, 8, 8):
        wait = s.next_wait("cut")
        assert bound / 2 <= wait <= bound
    waits = {round(session(retry=1.0).next_wait("cut"), 6) for _ in range(50)}
    assert len(waits) > 40  # drawn at random: a thousand clients cut at once spread out


def test_an_event_or_a_lasting_stream_starts_the_count_again() -> None:
    s = session(retry=1.0, max_delay=8.0)
    for _ in range(4):
        s.next_wait("cut")
    assert s.failures == 4
    s.feed(b"data: x\n\n")
    assert s.failures == 0
    assert s.next_wait("cut") <= 1.0
    for _ in range(4):
        s.next_wait("cut")
    s.opened_at = time.monotonic() - 9  # open longer than max_delay, no event
    assert s.next_wait("cut") <= 1.0


def test_the_servers_retry_replaces_the_default() -> None:
    s = session(retry=3.0)
    s.feed(b"retry: 200\n\n")
    assert s.retry == 0.2
    assert s.next_wait("cut") <= 0.2


def test_gives_up_after_max_reconnects_in_a_row() -> None:
    s = session(max_reconnects=2)
    s.next_wait("one")
    s.next_wait("two")
    with pytest.raises(GaveUp, match="2 reconnects in a row failed; last: three") as caught:
        s.next_wait("three")
    assert isinstance(caught.value.__cause__, Exception)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="list of topic names"):
        session(topics="news")
    with pytest.raises(ValueError, match="retry"):
        session(retry=-1)
    with pytest.raises(ValueError, match="max_reconnects"):
        session(max_reconnects=-1)


def test_typed_events() -> None:
    s = session()
    missed, disconnect, plain, odd = s.feed(
        b'event: sse-fast-missed\nid: 7\ndata: {"reason":"evicted","last_event_id":"3"}\n\n'
        b'event: sse-fast-disconnect\ndata: {"reason":"lagged","lost":12}\n\n'
        b"id: 8\ndata: hello\ndata: world\n\n"
        b"event: sse-fast-missed\ndata: not json\n\n"
    )
    assert missed == Missed("sse-fast-missed", missed.data, "7", None, "evicted", "3")
    assert disconnect == Disconnect(
        "sse-fast-disconnect", disconnect.data, "7", None, "lagged", {"lost": 12}
    )
    assert plain == Event("message", "hello\nworld", "8")
    assert type(odd) is Event  # not what sse_fast sends: passed on as it is
    assert s.last_event_id == "8"
    assert Event("message", '{"a": [1]}', "1").json() == {"a": [1]}


# ------------------------------------------------- answers, against a mock transport


class Script:
    """A mock server: answers in turn, recording each request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            return httpx.Response(204)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def stream(body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(200, headers={**SSE, **headers}, content=body)


async def run(script: Script, **kwargs: object) -> list[Event]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(script))
    kwargs.setdefault("retry", 0.01)
    async with connect("http://x/events", client=client, **kwargs) as events:  # type: ignore[arg-type]
        out = [event async for event in events]
    assert not client.is_closed  # the caller's client is the caller's to close
    await client.aclose()
    return out


def test_reconnects_with_last_event_id_topics_and_headers() -> None:
    script = Script(
        stream(b"id: 1\ndata: a\n\n"),
        httpx.ConnectError("refused"),
        httpx.Response(503, headers={"retry-after": "0"}),
        stream(b"data: b\n\nid: 2\ndata: c\n\n"),
        httpx.Response(204),
    )
    events = asyncio.run(run(script, topics=["news", "a/b"], headers={"Authorization": "Bearer t"}))
    assert [(e.data, e.id) for e in events] == [("a", "1"), ("b", "1"), ("c", "2")]
    first, *later = script.requests
    assert first.url.params.get_list("topic") == ["news", "a/b"]
    assert first.headers["accept"] == "text/event-stream"
    assert first.headers["authorization"] == "Bearer t"
    assert "last-event-id" not in first.headers
    assert [r.headers["last-event-id"] for r in later] == ["1", "1", "1", "2"]
    assert len(script.requests) == 5  # 204: no further attempt


def test_a_partial_event_is_dropped_when_the_stream_breaks() -> None:
    script = Script(stream(b"id: 1\ndata: a\n\nid: 2\ndata: cut"), stream(b"data: next\n\n"))
    events = asyncio.run(run(script))
    assert [(e.data, e.id) for e in events] == [("a", "1"), ("next", "1")]
    assert script.requests[1].headers["last-event-id"] == "1"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(401, text="token expired"), "HTTP 401: token expired"),
        (httpx.Response(404), "HTTP 404"),
        (
            httpx.Response(200, headers={"content-type": "text/html"}, text="<html>"),
            "HTTP 200 with text/html, not text/event-stream",
        ),
    ],
)
def test_what_retrying_cannot_fix_is_raised(answer: httpx.Response, message: str) -> None:
    script = Script(answer)
    with pytest.raises(StreamRefused, match=message) as caught:
        asyncio.run(run(script))
    assert caught.value.status == answer.status_code
    assert len(script.requests) == 1


def test_retry_after_is_the_least_wait() -> None:
    s = session(retry=0.01)
    s.opened(httpx.Response(429, headers={"retry-after": "2"}))
    assert s.next_wait("HTTP 429") == 2.0
    s.opened(httpx.Response(503, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert s.next_wait("HTTP 503") < 0.1  # a date in the past: no extra wait


def test_gave_up_after_failed_attempts() -> None:
    script = Script(*[httpx.ConnectError("refused")] * 4)
    with pytest.raises(GaveUp, match="3 reconnects in a row failed; last: refused"):
        asyncio.run(run(script, max_reconnects=3))
    assert len(script.requests) == 4


def test_sync_client_follows_the_same_rules() -> None:
    script = Script(
        stream(b"retry: 10\nid: 1\ndata: a\n\n"),
        httpx.Response(502),
        stream(b"id: 2\ndata: b\n\n"),
    )
    client = httpx.Client(transport=httpx.MockTransport(script))
    with connect_sync("http://x/e", ["t"], client=client, retry=5) as events:
        got = [(e.data, e.id) for e in events]
        assert events.retry == 0.01  # the server's, not 5 s
    assert got == [("a", "1"), ("b", "2")]
    assert [r.headers.get("last-event-id") for r in script.requests] == [None, "1", "1", "2"]
    client.close()


def test_httpx_byte_iterators_are_closed_where_reading_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left to the garbage collector, httpx's byte iterator's ``aclose()`` may find the
    loop closed (Python 3.13 warns: "coroutine method 'aclose' ... was never
    awaited"): both clients close it where they stop reading."""
    made: list[Any] = []
    for name in ("aiter_bytes", "iter_bytes"):
        real = getattr(httpx.Response, name)

        def recording(self: httpx.Response, *args: Any, real: Any = real, **kw: Any) -> Any:
            made.append(real(self, *args, **kw))
            return made[-1]

        monkeypatch.setattr(httpx.Response, name, recording)
    body = b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"

    async def main() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(Script(stream(body))))
        async with connect("http://x/events", client=client, retry=0.01) as events:
            async for _ in events:
                break  # stop reading after one event
        await client.aclose()

    asyncio.run(main())
    client = httpx.Client(transport=httpx.MockTransport(Script(stream(body))))
    with connect_sync("http://x/events", client=client, retry=0.01) as events:
        next(iter(events))
    client.close()
    readers = [it for it in made if getattr(it, "ag_frame", None) or getattr(it, "gi_frame", None)]
    assert len(made) >= 2 and readers == []  # every one closed (or done), none suspended


# ------------------------------------------------- silence and closing, real sockets


@contextlib.asynccontextmanager
async def silent_server(connections: list[int]):  # type: ignore[no-untyped-def]
    """Answers with a stream head and one event, then says nothing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        frame = f"id: {len(connections)}\ndata: x\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def test_a_silent_connection_is_given_up_after_read_timeout() -> None:
    async def main() -> tuple[list[str], int]:
        connections: list[int] = []
        async with silent_server(connections) as port:
            ids = []
            async with connect(f"http://{HOST}:{port}/", read_timeout=0.3, retry=0.01) as events:
                async for event in events:
                    ids.append(event.id)
                    if len(ids) == 3:
                        break
            return ids, len(connections)

    ids, connections = asyncio.run(asyncio.wait_for(main(), 10))
    assert ids == ["1", "2", "3"]
    assert connections == 3


def test_aclose_from_another_task_ends_the_iteration_at_once() -> None:
    async def main() -> None:
        async with silent_server([]) as port:
            events = connect(f"http://{HOST}:{port}/", read_timeout=None)
            got: list[Event] = []

            async def read() -> None:
                async for event in events:
                    got.append(event)

            reader = asyncio.create_task(read())
            await wait_for(lambda: got, what="the silent server's first event")
            started = time.monotonic()
            await events.aclose()
            await asyncio.wait_for(reader, 2)
            assert time.monotonic() - started < 1
            # closing while it waits to reconnect ends it as well
            waiting = connect(f"http://{HOST}:{free_port()}/", retry=30)
            task = asyncio.create_task(anext(aiter(waiting), None))  # type: ignore[arg-type]
            # refused: it counts the reconnect, then waits its 30 s
            await wait_for(lambda: waiting.reconnects, what="the refused stream's reconnect wait")
            await waiting.aclose()
            assert await asyncio.wait_for(task, 2) is None
        assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()

    asyncio.run(main())


def test_sync_close_from_another_thread() -> None:
    async def serve(ready: threading.Event, stop: asyncio.Event, port: list[int]) -> None:
        async with silent_server([]) as p:
            port.append(p)
            ready.set()
            await stop.wait()

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    port: list[int] = []
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(ready, stop, port),))
    thread.start()
    try:
        assert ready.wait(5)
        events = connect_sync(f"http://{HOST}:{port[0]}/", read_timeout=None)
        it = iter(events)
        assert next(it).id == "1"
        threading.Timer(0.2, events.close).start()
        assert list(it) == []
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


# ------------------------------------------------- a real server, killed and restarted


async def publish(port: int, first: int, count: int) -> None:
    body = orjson.dumps(
        {"events": [{"topic": "t", "data": str(n)} for n in range(first, first + count)]}
    )
    status, _, answer = await http_request(
        HOST, port, "POST", "/publish", body, {"Content-Type": "application/json"}
    )
    assert status == 200, answer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
@pytest.mark.processes("the client across real servers' restarts and limits")
def test_no_event_lost_or_repeated_across_a_server_restart(
    redis_server: RedisServer, how: signal.Signals
) -> None:
    """Events published before, while the client is away, and after: each once,
    in order. Killed: the connection breaks. Stopped: the drain says
    ``sse-fast-disconnect`` (a typed ``Disconnect``) with a retry. A reconnect may
    reach the new server while it starts: a ``Disconnect`` with ``starting``."""
    port = free_port()
    args = ("--redis-url", redis_server.url)
    data: list[str] = []
    control: list[Event] = []
    reconnects: list[int] = []
    streams: list[Any] = []

    async def read() -> None:  # in its own thread and loop; the servers are started here
        async with connect(
            f"http://{HOST}:{port}/events", topics=["t"], retry=1.0, max_delay=2.0, read_timeout=5
        ) as events:
            streams.append(events)
            await _read_until(events, 300, data, control)
            reconnects.append(events.reconnects)

    reader = threading.Thread(target=asyncio.run, args=(asyncio.wait_for(read(), 60),))
    with ServerProcess(*args, port=port, heartbeat_interval=1) as server:
        reader.start()
        asyncio.run(opened(server))  # else the first events may precede the stream
        asyncio.run(publish(port, 0, 100))
        asyncio.run(wait_for(lambda: len(data) == 100, 15, what="the first 100 events"))
        if how == signal.SIGKILL:
            server._kill_group()  # a crash: the server's processes all gone at once
        server.stop(how)
    # the client saw its stream end and waits to reconnect (1 s or so) when the new one starts
    asyncio.run(wait_for(lambda: streams[0].reconnects, 15, what="the client's reconnect wait"))
    with ServerProcess(*args, port=port, heartbeat_interval=1):
        asyncio.run(publish(port, 100, 100))  # before the client is back: resumed from Redis
        asyncio.run(wait_for(lambda: len(data) >= 200, 15, what="the events published while away"))
        asyncio.run(publish(port, 200, 100))
        reader.join(15)
    assert not reader.is_alive()
    assert data == [str(n) for n in range(300)]
    assert not [e for e in control if isinstance(e, Missed)]
    assert reconnects[0] >= 1
    reasons = [e.reason for e in control]
    # a reconnect that reaches the new server before its start is done is told to come
    # back ("starting", a Disconnect); nothing else may come between the events
    if how == signal.SIGTERM:
        assert reasons[:1] == ["draining"] and set(reasons[1:]) <= {"starting"}, reasons
    else:
        assert set(reasons) <= {"starting"}, reasons


@pytest.mark.processes("the client across real servers' restarts and limits")
def test_a_restarted_server_without_history_says_missed() -> None:
    port = free_port()
    seen: list[Event] = []

    def read(events: object) -> None:
        for event in events:  # type: ignore[attr-defined]
            seen.append(event)

    with ServerProcess(port=port, heartbeat_interval=1) as server:
        events = connect_sync(f"http://{HOST}:{port}/events", ["t"], retry=0.5, read_timeout=5)
        thread = threading.Thread(target=read, args=(events,))
        thread.start()
        asyncio.run(opened(server))
        asyncio.run(publish(port, 0, 3))
        asyncio.run(wait_for(lambda: len(seen) == 3, 15, what="the first 3 events"))
    with ServerProcess(port=port, heartbeat_interval=1):
        asyncio.run(
            wait_for(lambda: any(isinstance(e, Missed) for e in seen), 15, what="sse-fast-missed")
        )
        asyncio.run(publish(port, 3, 2))
        asyncio.run(
            wait_for(
                lambda: len([e for e in seen if e.event == "message"]) == 5,
                15,
                what="the 2 events after the restart",
            )
        )
        events.close()
        thread.join(5)
    assert not thread.is_alive()
    messages = [e.data for e in seen if e.event == "message"]
    assert messages == ["0", "1", "2", "3", "4"]
    missed = [e for e in seen if isinstance(e, Missed)]
    assert len(missed) == 1
    assert missed[0].reason in ("unknown", "evicted")
    assert missed[0].last_event_id == next(e for e in seen if e.data == "2").id


async def _read_until(events: Any, count: int, data: list[str], control: list[Event]) -> None:
    """Read ``events``: the data of ordinary ones into ``data``, ``Missed`` and ``Disconnect``
    into ``control``, until ``data`` holds ``count``."""
    async for event in events:
        if isinstance(event, (Missed, Disconnect)):
            control.append(event)
        else:
            data.append(event.data)
            if len(data) == count:
                return


def test_an_oversized_event_gives_what_came_before_then_bad_stream() -> None:
    script = Script(stream(b"id: 1\ndata: ok\n\ndata: " + b"x" * 5000 + b"\n\n"))
    got: list[Event] = []

    async def main() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(script))
        async with connect("http://x/e", client=client, max_event_size=1024) as events:
            async for event in events:
                got.append(event)
        await client.aclose()

    with pytest.raises(BadStream, match="1024"):
        asyncio.run(main())
    assert [e.data for e in got] == ["ok"]
    assert len(script.requests) == 1  # not retried: it would resume into the same event


def test_retry_after_is_bounded_and_refusal_bodies_are_cut() -> None:
    s = session()
    s.opened(httpx.Response(503, headers={"retry-after": "1e300"}))
    assert s.least_wait == 86400.0
    s.opened(httpx.Response(503, headers={"retry-after": "inf"}))
    assert s.least_wait == 86400.0
    script = Script(httpx.Response(404, content=b"y" * 200_000))
    with pytest.raises(StreamRefused) as caught:
        asyncio.run(run(script))
    assert 64 * 1024 <= len(caught.value.body) < 200_000


def test_received_events_kept_their_old_name() -> None:
    """``sse_fast.client.Event`` was the received event's name before 0.2 (the
    encoder's ``sse_fast.Event`` is an event to send): it still is the same class."""
    from sse_fast import Event as EventToSend
    from sse_fast.client import Event, ReceivedEvent

    assert Event is ReceivedEvent and EventToSend is not ReceivedEvent


def test_the_clients_made_here_share_one_verifying_tls_context() -> None:
    """httpx makes a TLS context per client, loading the CA bundle each time (~25 ms
    of CPU a stream: 4.9 s of the 200 streams of tests/e2e/test_restart.py). The
    streams' own clients, asyncio and sync, share one, and it verifies."""
    from sse_fast.client import connect_sync

    def context(stream: Any) -> Any:
        return stream._client._transport._pool._ssl_context

    streams = [connect("http://127.0.0.1:1/events"), connect("http://127.0.0.1:1/events")]
    synced = connect_sync("http://127.0.0.1:1/events")
    try:
        shared = context(streams[0])
        assert context(streams[1]) is shared and context(synced) is shared
        assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
        # a client of the caller's keeps its own
        with httpx.Client() as mine:
            assert connect_sync("http://127.0.0.1:1/", client=mine)._client is mine
    finally:
        synced.close()
        for stream in streams:
            asyncio.run(stream.aclose())


@pytest.mark.processes("the client across real servers' restarts and limits")
def test_a_stream_over_several_partitions_resumes_with_its_cursor_across_a_restart() -> None:
    """A fleet on Redis with 8 partitions, a client of three topics in three partitions: the
    stream's ids are cursors (``~...``), and the client, sending back the last one after a
    SIGTERM restart, gets every event published before, while it was away and after, each
    once, in each topic's order, with no ``sse-fast-missed``."""
    from sse_fast.brokers.redis._partitions import partition_of

    topics = []
    for name in (f"p{i}" for i in range(100)):
        if partition_of(name, 8) not in {partition_of(t, 8) for t in topics}:
            topics.append(name)
        if len(topics) == 3:
            break
    port = free_port()
    got: list[Event] = []
    reconnects: list[int] = []

    async def send(first: int, count: int) -> None:
        events = [{"topic": topics[n % 3], "data": str(n)} for n in range(first, first + count)]
        status, _, answer = await http_request(
            HOST, port, "POST", "/publish", orjson.dumps({"events": events}),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        assert status == 200, answer

    async def read() -> None:
        async with connect(
            f"http://{HOST}:{port}/events", topics=topics, retry=1.0, max_delay=2.0, read_timeout=5
        ) as events:
            async for event in events:
                got.append(event)
                if len([e for e in got if e.event == "message"]) == 90:
                    break
            reconnects.append(events.reconnects)

    with RedisServer() as redis_server:
        args = ("--redis-url", redis_server.url, "--redis-partitions", "8")
        reader = threading.Thread(target=asyncio.run, args=(asyncio.wait_for(read(), 60),))
        with ServerProcess(*args, port=port, heartbeat_interval=1) as server:
            reader.start()
            asyncio.run(opened(server))
            asyncio.run(send(0, 30))
            asyncio.run(wait_for(lambda: len(got) >= 30, 15, what="the first 30 events"))
            server.stop(signal.SIGTERM)
        with ServerProcess(*args, port=port, heartbeat_interval=1):
            asyncio.run(send(30, 30))  # while the client is away
            asyncio.run(
                wait_for(
                    lambda: len([e for e in got if e.event == "message"]) >= 60,
                    15,
                    what="the events published while away",
                )
            )
            asyncio.run(send(60, 30))
            reader.join(15)
    assert not reader.is_alive()
    messages = [e for e in got if e.event == "message"]
    assert sorted(int(e.data) for e in messages) == list(range(90))  # each once
    for k in range(3):  # each topic in order
        mine = [int(e.data) for e in messages if int(e.data) % 3 == k]
        assert mine == sorted(mine)
    assert all(e.id.startswith("~") for e in messages)  # cursors: several partitions
    reasons = [e.reason for e in got if isinstance(e, Disconnect)]
    assert [e.event for e in got if e.event != "message"] == ["sse-fast-disconnect"] * len(reasons)
    # the drain's, then any come-back from the new server while it starts
    assert reasons[:1] == ["draining"] and set(reasons[1:]) <= {"starting"}, reasons
    assert reconnects[0] >= 1


@pytest.mark.processes("the client across real servers' restarts and limits")
def test_a_pattern_stream_follows_its_topics_across_a_restart(tmp_path: Any) -> None:
    """``connect(topics=["inbox/1/*"])``: events of existing topics, of a topic created
    while the server is down (published to the restarted one before the client is
    back) and after: each once, in order, none of ``inbox/2``; the reconnect resumes
    from the data directory with no ``sse-fast-missed``."""
    port = free_port()
    data: list[str] = []
    control: list[Event] = []

    async def read() -> None:
        async with connect(
            f"http://{HOST}:{port}/events", topics=["inbox/1/*"], retry=0.5, read_timeout=5
        ) as events:
            await _read_until(events, 4, data, control)

    async def send(topic: str, value: str) -> None:
        body = orjson.dumps({"topic": topic, "data": value})
        status, _, reply = await http_request(HOST, port, "POST", "/publish", body)
        assert status == 200, reply

    reader = threading.Thread(target=asyncio.run, args=(asyncio.wait_for(read(), 60),))
    with ServerProcess(port=port, data_dir=str(tmp_path)) as server:
        asyncio.run(send("inbox/1/a", "old"))
        reader.start()
        asyncio.run(opened(server))
        asyncio.run(send("inbox/1/a", "one"))
        asyncio.run(send("inbox/2/a", "not mine"))
        asyncio.run(wait_for(lambda: data == ["one"], 15, what="the event of inbox/1/a"))
    with ServerProcess(port=port, data_dir=str(tmp_path)):
        asyncio.run(send("inbox/1/b", "two"))  # a topic created while the client is away
        asyncio.run(wait_for(lambda: len(data) >= 2, 15, what="the event of the new topic"))
        asyncio.run(send("inbox/1/a", "three"))
        asyncio.run(send("inbox/1/c", "four"))
        reader.join(15)
    assert not reader.is_alive()
    assert data == ["one", "two", "three", "four"]
    reasons = [e.reason for e in control]  # the drain's, then any while the new one starts
    assert reasons[:1] == ["draining"] and set(reasons[1:]) <= {"starting"}, reasons


@pytest.mark.processes("the client across real servers' restarts and limits")
def test_a_stream_told_to_come_back_over_a_limit_is_retried_and_gets_its_events() -> None:
    """Over ``max_connections`` the server answers a come-back (a 200 of one
    ``sse-fast-disconnect``, reason ``max-connections``): the client yields it and comes
    back after its retry; once a slot is free it gets the stream and its events."""
    import socket

    with ServerProcess("--workers", "1", max_connections=1, retry_ms=300) as server:
        held = socket.create_connection((HOST, server.port), 10)
        held.sendall(b"GET /events?topic=held HTTP/1.1\r\nHost: test\r\n\r\n")
        assert held.recv(4096).startswith(b"HTTP/1.1 200")

        stop = asyncio.Event()

        async def streamed_or_stopped() -> bool:
            """The client's stream of ``t`` is the hub's (an event published now is its)."""
            if stop.is_set():
                return True
            status, _, body = await server.get("/stats?connections=1")
            listed = orjson.loads(body)["connection_list"] if status == 200 else []
            return any("t" in c["topics"] for c in listed)

        async def publish_once_streamed() -> None:  # ends by itself, not only when cancelled
            await wait_for(streamed_or_stopped, 30, what="the client's stream once a slot freed")
            if not stop.is_set():
                await server.publish(b'{"topic": "t", "data": "room"}')

        async def main() -> list[Event]:
            seen: list[Event] = []
            publisher = asyncio.ensure_future(publish_once_streamed())
            try:
                async with connect(f"http://{HOST}:{server.port}/events?topic=t") as events:
                    async for event in events:
                        seen.append(event)
                        if isinstance(event, Disconnect):
                            held.close()  # a slot frees after the first come-back
                        elif event.data == "room":
                            return seen
            finally:
                stop.set()
                await publisher
            return seen

        seen = asyncio.run(asyncio.wait_for(main(), 30))
    told = [e for e in seen if isinstance(e, Disconnect)]
    assert told and {e.reason for e in told} == {"max-connections"}, seen
    assert seen[-1].data == "room"


@pytest.mark.processes("the client reading a real server's compressed stream")
def test_the_client_reads_compressed_streams() -> None:
    """httpx (the client's) asks for gzip, deflate and zstd: the server sends zstd, its
    preference, and the client hands out the events as an identity stream's. (The
    restart tests above run over compressed streams too.)"""
    port = free_port()
    seen: list[Event] = []

    def read(events: object) -> None:
        for event in events:  # type: ignore[attr-defined]
            seen.append(event)
            if len(seen) == 50:
                return

    with ServerProcess(port=port) as server:
        events = connect_sync(f"http://{HOST}:{port}/events", ["t"], read_timeout=10)
        thread = threading.Thread(target=read, args=(events,))
        thread.start()
        asyncio.run(opened(server))
        status, _, body = asyncio.run(server.get("/stats?connections=1"))
        assert status == 200, body
        (stream,) = orjson.loads(body)["connection_list"]
        asyncio.run(publish(port, 0, 50))
        thread.join(15)
        events.close()
    assert not thread.is_alive()
    assert stream["coding"] == "zstd" and stream["compression"] == "independent"
    assert [e.data for e in seen] == [str(n) for n in range(50)]
