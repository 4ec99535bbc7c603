"""``POST /publish/stream`` on a real ``sse-fast serve``: acks in order while the
body is still coming, a bad line does not stop the others, nothing acked is
lost when the publisher leaves, the rules of /publish per line, back-pressure
on a publisher that does not read its acks, and the end on drain. Real processes:
a publisher's stream over a real server's sockets, its back-pressure and the drain."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from sse_fast.testing import (
    HOST,
    ChunkedDecoder,
    ServerProcess,
    collect,
    read_head,
    rss_kb,
    wait_for,
)

from ..support.security_harness import WallClock


class RawStream:
    """A publisher speaking the protocol by hand: a chunked request body written
    line by line, acks read as they come."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/x-ndjson", **(headers or {})}
        self.decoder = ChunkedDecoder()
        self.buffer = b""
        self.status = 0
        self.response_headers: dict[str, str] = {}

    async def open(self) -> RawStream:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        head = ["POST /publish/stream HTTP/1.1", f"Host: {HOST}:{self.port}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        head += ["Transfer-Encoding: chunked", "", ""]
        self.writer.write("\r\n".join(head).encode())
        return self

    def write(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    def line(self, event: Any) -> None:
        self.write(orjson.dumps(event) + b"\n")

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def head(self) -> int:
        if not self.status:
            self.status, self.response_headers = await asyncio.wait_for(read_head(self.reader), 5)
        return self.status

    async def acks(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The next ``count`` ack lines (fewer if the response ends)."""
        await self.head()
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            while b"\n" in self.buffer and len(out) < count:
                line, _, self.buffer = self.buffer.partition(b"\n")
                out.append(orjson.loads(line))
            if len(out) == count or self.decoder.finished:
                break
            data = await asyncio.wait_for(self.reader.read(65536), deadline - time.monotonic())
            if not data:
                break
            self.buffer += self.decoder.feed(data)
        return out

    def close(self) -> None:
        self.writer.close()


async def open_streams(server: ServerProcess) -> int:
    text = (await server.get("/metrics"))[2].decode()
    return int(re.search(r"^sse_fast_publish_streams_open (\d+)", text, re.M)[1])  # type: ignore[index]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(heartbeat_interval=1) as server:
        yield server


@pytest.mark.processes("a publisher's stream over a real server's sockets, and the drain")
def test_acks_come_in_order_while_the_body_is_still_coming(server: ServerProcess) -> None:
    async def main() -> None:
        client = server.client("s/1", "s/2")
        await client.connect()
        stream = await RawStream(server.port).open()
        stream.line({"topic": "s/1", "data": "one"})
        assert await stream.head() == 200
        assert stream.response_headers["content-type"] == "application/x-ndjson"
        # the body is open: the first ack comes before the second line is written
        [first] = await stream.acks(1)
        assert first["line"] == 1 and len(first["ids"]) == 1
        stream.write(b"\n")  # blank: skipped, not acknowledged
        stream.line({"topic": "s/2"})  # no data
        stream.write(b"{not json\n")
        stream.line({"events": [{"topic": "s/1", "data": 2}, {"topic": "s/2", "data": 3}]})
        stream.write(b'{"topic":"s/2","data":"last, without a newline"}')
        await stream.end()
        acks = await stream.acks(5)
        assert [a.get("line") for a in acks] == [3, 4, 5, 6, None]
        assert acks[0]["status"] == 400 and acks[0]["error"].startswith("line: data is required")
        assert acks[1]["status"] == 400 and "not valid JSON" in acks[1]["error"]
        assert len(acks[2]["ids"]) == 2 and len(acks[3]["ids"]) == 1
        assert acks[4] == {"done": True, "published": 3, "failed": 2}
        events = await collect(client, 4)
        assert [e.data for e in events] == ["one", "2", "3", "last, without a newline"]
        assert [e.id for e in events] == [*first["ids"], *acks[2]["ids"], *acks[3]["ids"]]
        stream.close()
        client.close()

    asyncio.run(main())


@pytest.mark.processes("a publisher's stream over a real server's sockets, and the drain")
def test_a_publisher_that_leaves_mid_body_loses_nothing_it_was_acked_for(
    server: ServerProcess,
) -> None:
    async def main() -> None:
        client = server.client("gone")
        await client.connect()
        stream = await RawStream(server.port).open()
        for n in range(200):
            stream.line({"topic": "gone", "data": n})
        acks = await stream.acks(120)
        for n in range(200, 300):
            stream.line({"topic": "gone", "data": n})
        stream.write(b'{"topic":"gone","da')  # half a line, then the publisher is gone
        stream.writer.transport.abort()
        acked = [a["ids"][0] for a in acks]
        events = await collect(client, 120)
        received = [e.id for e in events]
        assert received[:120] == acked  # everything acked was published, in order

        async def closed() -> bool:
            return await open_streams(server) == 0

        await wait_for(closed, timeout=10, what="the server closes the publisher's stream")
        # what came after (published or not) is in order and never twice: all of it
        # comes before a marker published once the stream is closed
        status, _, answer = await server.publish(orjson.dumps({"topic": "gone", "data": "m"}))
        assert status == 200, answer
        (marker,) = orjson.loads(answer)["ids"]
        after = await collect(client, 1000, until=lambda c: c.last_event_id == marker)
        assert after and after[-1].id == marker
        received += [e.id for e in after[:-1]]
        assert len(set(received)) == len(received)
        client.close()

    asyncio.run(main())


@pytest.mark.processes("a publisher's stream over a real server's sockets, and the drain")
def test_limits_and_topic_rights_apply_per_line() -> None:
    with ServerProcess(
        allow_anonymous_publish=0,
        publish_token="",
        jwt_secret="s" * 32,
        max_body_bytes=200,
        publish_rate=20,
    ) as server:
        import jwt

        token = jwt.encode({"sse_fast": {"publish": ["mine/*"]}}, "s" * 32, algorithm="HS256")

        async def main() -> None:
            # no credential: refused before any line is read
            anonymous = await RawStream(server.port).open()
            anonymous.line({"topic": "mine/1", "data": 1})
            assert await anonymous.head() == 401
            anonymous.close()
            stream = await RawStream(server.port, {"Authorization": f"Bearer {token}"}).open()
            stream.line({"topic": "mine/1", "data": 1})
            stream.line({"topic": "theirs", "data": 2})
            stream.write(orjson.dumps({"topic": "mine/1", "data": "x" * 300}) + b"\n")
            stream.write(b"y" * 150)  # one line over the limit, in two chunks
            stream.write(b"y" * 150 + b"\n")
            started = time.monotonic()
            for n in range(60):
                stream.line({"topic": "mine/2", "data": n})
            await stream.end()
            acks = await stream.acks(100)
            took = time.monotonic() - started
            assert acks[0]["ids"]
            assert acks[1]["status"] == 403 and "may not publish to theirs" in acks[1]["error"]
            assert acks[2]["status"] == 413 and "max_body_bytes" in acks[2]["error"]
            assert acks[3]["status"] == 413 and acks[3]["line"] == 4
            assert all("ids" in a for a in acks[4:64])  # over the rate: slowed, not refused
            assert acks[64] == {"done": True, "published": 61, "failed": 3}
            assert took > 0.8  # 61 publishes: a burst of 40, then 20/s
            stream.close()

        asyncio.run(main())


@pytest.mark.processes("a publisher's stream over a real server's sockets, and the drain")
def test_a_publisher_that_does_not_read_acks_is_slowed_then_cut() -> None:
    with ServerProcess(catch_up_timeout=2, max_body_bytes=4096) as server:

        async def main() -> None:
            (pid,) = server.worker_pids() or [server.proc.pid]  # type: ignore[union-attr]
            before = rss_kb(pid)
            stream = await RawStream(server.port).open()
            line = orjson.dumps({"topic": "flood", "data": "z" * 200}) + b"\n"
            chunk = line * 100
            sent = 0
            blocked = False
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stream.write(chunk)
                try:
                    await asyncio.wait_for(stream.writer.drain(), 1.0)
                except TimeoutError:
                    blocked = True  # TCP pushes back: the server stopped reading
                    break
                except ConnectionError:
                    break
                sent += len(chunk)
            assert blocked, f"sent {sent} bytes without being slowed"
            assert sent < 64 * 1024 * 1024
            grown = rss_kb(pid) - before
            assert grown < 40 * 1024, f"server grew by {grown} kB"

            # it never reads its acks: cut once catch_up_timeout (2 s) passed
            async def cut() -> bool:
                return await open_streams(server) == 0

            await wait_for(cut, timeout=15, what="the stream is cut")
            stream.writer.transport.abort()

        asyncio.run(main())


@pytest.mark.processes("a publisher's stream over a real server's sockets, and the drain")
def test_a_draining_server_ends_the_stream_with_a_503_line() -> None:
    with ServerProcess(drain_timeout=1) as server:

        async def main() -> None:
            stream = await RawStream(server.port).open()
            stream.line({"topic": "d", "data": 1})
            [ack] = await stream.acks(1)
            assert ack["ids"]
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            [last] = await stream.acks(2, timeout=10)
            assert last["status"] == 503 and last["reason"] == "draining"
            assert "not acknowledged may not have been published" in last["error"]
            stream.close()

        asyncio.run(main())


SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/publish/stream",
    "headers": [(b"content-type", b"application/x-ndjson")],
    "query_string": b"",
}


async def _in_process(
    settings: Any,
    body: list[Any],
    *,
    end: bool = False,
    during: Any = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    wall_clock: Any = time.time,
) -> list[dict[str, Any]]:
    """POST /publish/stream in process (a plain coroutine ``send``, as under
    uvicorn). ``body``: chunks (bytes), and between them, things to do before the
    next one is read (a callable: e.g. moving ``wall_clock``, the app's); with
    ``end`` the last chunk ends the body, else it stays open. ``during(app)`` runs
    while the stream is open. Returns the ack lines."""
    from sse_fast.app import App

    app = App(settings, wall_clock=wall_clock)
    sent: list[dict[str, Any]] = []
    queue = list(body)

    async def receive() -> dict[str, Any]:
        while queue and callable(queue[0]):
            queue.pop(0)()
        if not queue:
            await asyncio.sleep(3600)  # the body stays open
        chunk = queue.pop(0)
        assert isinstance(chunk, bytes)
        return {"type": "http.request", "body": chunk, "more_body": not (end and not queue)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {**SCOPE, "headers": [*SCOPE["headers"], *headers]}
    task = asyncio.get_running_loop().create_task(app(scope, receive, send))
    if during is not None:
        await during(app)
    await asyncio.wait_for(task, 10)
    assert sent[0]["status"] == 200
    text = b"".join(m.get("body", b"") for m in sent[1:])
    return [orjson.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("cut", [1, 7, 64, 10_000])
def test_lines_are_the_same_however_the_body_is_cut(cut: int) -> None:
    """The body cut into chunks of ``cut`` bytes gives the same acks, including
    lines over the limit that span chunks, blank lines and a last line without a
    newline."""
    from sse_fast.settings import Settings

    body = b"".join(
        [
            b'{"topic":"a","data":1}\n',
            b"\n   \n",
            b'{"topic":"a","data":"' + b"x" * 120 + b'"}\n',  # over the 100-byte limit
            b'{"events":[{"topic":"a","data":2},{"topic":"b","data":3}]}\n',
            b"[1]\n",
            b'{"topic":"b","data":4}',
        ]
    )
    chunks: list[bytes | float] = [body[i : i + cut] for i in range(0, len(body), cut)]
    settings = Settings(allow_anonymous_publish=True, max_body_bytes=100, publish_rate=0)
    acks = asyncio.run(_in_process(settings, chunks, end=True))
    assert [a.get("line") for a in acks] == [1, 4, 5, 6, 7, None]
    assert acks[1]["status"] == 413 and "max_body_bytes" in acks[1]["error"]
    assert len(acks[2]["ids"]) == 2 and acks[3]["status"] == 400 and len(acks[4]["ids"]) == 1
    assert acks[5] == {"done": True, "published": 3, "failed": 2}


def test_an_expired_credential_ends_the_stream_with_a_401_line() -> None:
    import jwt

    from sse_fast.settings import Settings

    secret = "s" * 32
    clock = WallClock()
    token = jwt.encode(
        {"exp": int(clock.now) + 2, "sse_fast": {"publish": ["*"]}}, secret, algorithm="HS256"
    )
    line = b'{"topic":"a","data":1}\n'
    settings = Settings(jwt_secret=secret, publish_rate=0)
    auth = ((b"authorization", f"Bearer {token}".encode()),)

    def expire() -> None:
        clock.now += 2

    body = [line, expire, line, line]
    acks = asyncio.run(_in_process(settings, body, headers=auth, wall_clock=clock))
    assert len(acks) == 2 and acks[0]["ids"]  # before exp: published; after: the end
    assert acks[1]["status"] == 401 and acks[1]["reason"] == "expired"
    assert "credential expired" in acks[1]["error"]


def test_the_topic_limit_answers_each_line_and_the_stream_goes_on() -> None:
    from sse_fast.settings import Settings

    lines = b"".join(b'{"topic":"t%d","data":%d}\n' % (n, n) for n in range(5))

    async def main() -> list[dict[str, Any]]:
        answered = asyncio.Event()  # set when the stream asks for more: the lines are acked

        async def drain(app: Any) -> None:
            await asyncio.wait_for(answered.wait(), 10)
            await app.hub.drain()

        settings = Settings(allow_anonymous_publish=True, max_topics=3, publish_rate=0)
        return await _in_process(settings, [lines, answered.set], during=drain)

    acks = asyncio.run(main())
    assert [len(a.get("ids", ())) for a in acks[:5]] == [1, 1, 1, 0, 0]
    assert all(a["status"] == 503 and "topic limit" in a["error"] for a in acks[3:5])
    assert acks[5]["reason"] == "draining"  # the stream was still open


def test_a_drain_does_not_wait_out_the_publish_rate() -> None:
    from sse_fast.settings import Settings

    lines = b"".join(b'{"topic":"slow","data":%d}\n' % n for n in range(60))

    async def main() -> tuple[list[dict[str, Any]], float]:
        started = time.monotonic()

        async def drain(app: Any) -> None:
            limiter = app.admission.publish_limiter
            take = limiter.take
            waiting = asyncio.Event()  # set once the stream is told to wait for the rate

            def recorded(key: str) -> float:
                wait: float = take(key)
                if wait:
                    waiting.set()
                return wait

            limiter.take = recorded
            await asyncio.wait_for(waiting.wait(), 10)
            await app.hub.drain()

        settings = Settings(allow_anonymous_publish=True, publish_rate=5, drain_timeout=1)
        acks = await _in_process(settings, [lines], during=drain)
        return acks, time.monotonic() - started

    acks, took = asyncio.run(main())
    assert took < 3, f"the drain waited {took:.1f} s for the rate"
    assert acks == [acks[0]] and acks[0]["status"] == 503 and acks[0]["reason"] == "draining"


def test_a_cancellation_during_the_drain_is_not_swallowed() -> None:
    """The drain interrupts a stream waiting for its body by cancelling that wait,
    not the task: a cancellation of the task at the same moment still cancels it.
    (The drain alone ending such a stream with its 503 line: the topic-limit test.)"""
    from sse_fast.app import App
    from sse_fast.settings import Settings

    async def main() -> None:
        app = App(Settings(allow_anonymous_publish=True, drain_timeout=0.2))

        waiting = asyncio.Event()

        async def receive() -> dict[str, Any]:
            waiting.set()
            await asyncio.sleep(3600)  # the body never comes
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            pass

        task = asyncio.get_running_loop().create_task(app(SCOPE, receive, send))
        await asyncio.wait_for(waiting.wait(), 10)  # the stream waits for its body
        drained = asyncio.ensure_future(app.hub.drain())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await drained

    asyncio.run(main())
