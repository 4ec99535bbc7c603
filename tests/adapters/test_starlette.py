"""sse_fast.starlette: sse-starlette's EventSourceResponse, switched by an import.

In process (ASGI messages in and out): the events a client parses are
sse-starlette's for every kind of item; headers (no Connection on HTTP/2);
HEAD; a client that leaves (the generator is cancelled and closed, the close
handler runs, nothing is left running); pings only when idle; a send that does
not complete (SendTimeoutError); shutdown with a grace period and a farewell;
AppStatus.should_exit; data_sender_callable; Last-Event-ID; sse-starlette's seams
(``_listen_for_exit_signal`` and the ``anyio.sleep`` of its pings, replaced as its
tests replace them, looked up once per stream); a shutdown while a write is stuck;
the cleanup shielded from an anyio scope cancelled around the response. Under real
servers: tests/adapters/test_starlette_servers.py."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sse_starlette
from sse_starlette import EventSourceResponse as TheirResponse

from sse_fast import Parser
from sse_fast import starlette as ours
from sse_fast._adapters import pacing as _pacing
from sse_fast.starlette import (
    AppStatus,
    EventSourceResponse,
    JSONServerSentEvent,
    SendTimeoutError,
    ServerSentEvent,
    _stream,
    last_event_id,
    shutdown_streams,
)
from sse_fast.testing import wait_for


def _parsed(stream: bytes) -> list[tuple[Any, ...]]:
    parser = Parser()
    return [(e.event, e.data, e.id, e.retry) for e in parser.feed(stream)]


def _items() -> list[Any]:
    """One of every kind of item sse-starlette takes (made fresh: each library
    gets its own event objects)."""
    return [
        "plain",
        "two\nlines\r\nthree\rfour",
        "",
        5,
        {"data": "d", "event": "e", "id": "7", "retry": 1500},
        {"data": {"k": [1, 2]}},  # str() of the dict, as sse-starlette
        {"data": "x", "id": "a\nb", "event": "n\r\name"},  # line breaks dropped
        {"comment": "only a comment"},
        {"data": "x", "comment": "c1\nc2"},
        {"id": "only-an-id"},
        {"retry": 0},
        b"data: raw bytes\n\n",
        "caf\u00e9 \u2603",
    ]


def _events(module: Any) -> list[Any]:
    return [
        module.ServerSentEvent("sse", event="e", id="1", retry=10, comment="c"),
        module.ServerSentEvent(data="m\nl", sep="\n"),
        module.JSONServerSentEvent({"a": 1, "b": "\u00e9"}),
        module.JSONServerSentEvent([1, 2, None]),
    ]


@pytest.mark.parametrize("sep", [None, "\r\n", "\n", "\r"])
def test_every_item_is_written_as_sse_starlette_writes_it(sep: str | None) -> None:
    """The same bytes, item by item: sse-starlette's field order and separator
    (its default, ``\\r\\n``, when none is given)."""
    from sse_starlette.event import ensure_bytes as theirs

    their_sep = sep or "\r\n"
    for item, their_item in zip(_items(), _items(), strict=True):
        assert ours.ensure_bytes(item, their_sep) == theirs(their_item, their_sep), item
    for event, their_event in zip(_events(ours), _events(sse_starlette.event), strict=True):
        assert ours.ensure_bytes(event, their_sep) == theirs(their_event, their_sep), event
    mine = b"".join(ours.ensure_bytes(i, their_sep) for i in _items())
    assert len(_parsed(mine)) >= 10


def test_event_objects_keep_sse_starlettes_interface() -> None:
    event = ServerSentEvent("d", event="e", id="1", retry=5, comment="c", sep="\r\n")
    fields = (event.data, event.event, event.id, event.retry, event.comment)
    assert fields == ("d", "e", "1", 5, "c")
    event.data = "changed"  # attributes stay writable
    assert b"data: changed\r\n" in event.encode()
    assert ServerSentEvent().encode() == b"\r\n"  # a lone separator, as theirs
    with pytest.raises(TypeError, match="retry argument must be int"):
        ServerSentEvent("d", retry="5").encode()  # type: ignore[arg-type]
    assert JSONServerSentEvent({"x": 1}).encode() == b'data: {"x":1}\r\n\r\n'
    with pytest.raises(TypeError, match="data, event, id, retry, comment"):
        ours.ensure_bytes({"data": 1, "topic": "t"}, "\n")
    with pytest.raises(ValueError, match="sep must be one of"):
        EventSourceResponse([], sep="\t")
    with pytest.raises(ValueError, match="ping interval"):
        EventSourceResponse([], ping=-1)


# ---------------------------------------------------------------- in process


class Client:
    """An ASGI client in process: ``send`` records, ``receive`` waits for a
    disconnect (``leave()``)."""

    def __init__(self, http_version: str = "1.1", method: str = "GET") -> None:
        self.messages: list[dict[str, Any]] = []
        self.left = asyncio.Event()
        self.block: asyncio.Future[None] | None = None  # sends wait on it when set
        self.stuck = 0  # sends that waited on it
        self.scope = {
            "type": "http",
            "method": method,
            "http_version": http_version,
            "path": "/",
            "headers": [(b"last-event-id", b"caf\xc3\xa9-\xff")],
        }

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.block is not None and message["type"] == "http.response.body":
            self.stuck += 1
            await self.block
        self.messages.append(message)

    def leave(self) -> None:
        self.left.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def ended(self) -> bool:
        return bool(self.messages) and self.messages[-1].get("more_body") is False


def _run(response: Any, client: Client) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(
        response(client.scope, client.receive, client.send)
    )


def _pings(client: Client) -> list[bytes]:
    """The pings ``client`` received (sse-starlette's text)."""
    return [m["body"] for m in client.messages if m.get("body", b"").startswith(b": ping")]


def _on_schedule(pings: int, took: float, every: float) -> bool:
    """``pings`` in ``took`` seconds keep a schedule of one every ``every`` seconds:
    none early, late ones (a busy machine) at most twice as far apart."""
    return took / every / 2 - 1 <= pings <= took / every + 1


def test_a_finite_stream_is_sent_whole_with_sse_headers() -> None:
    async def main() -> None:
        for version, connection in (("1.1", b"keep-alive"), ("2", None), ("3", None)):
            client = Client(version)
            response = EventSourceResponse(
                iter(["a", {"event": "e", "data": 1}]), headers={"X-Mine": "1"}
            )
            await _run(response, client)
            headers = client.headers
            assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
            assert headers[b"cache-control"] == b"no-store"
            assert headers[b"x-accel-buffering"] == b"no"
            assert headers[b"x-mine"] == b"1"
            assert headers.get(b"connection") == connection
            assert client.body == b"data: a\r\n\r\nevent: e\r\ndata: 1\r\n\r\n" and client.ended

    asyncio.run(main())


def test_head_answers_headers_and_never_starts_the_stream() -> None:
    async def main() -> None:
        started = False

        async def endless() -> AsyncIterator[str]:
            nonlocal started
            started = True
            while True:
                yield "x"
                await asyncio.sleep(1)  # pace: an endless generator's

        client = Client(method="HEAD")
        await asyncio.wait_for(_run(EventSourceResponse(endless()), client), 2)
        assert not started and client.body == b"" and client.ended

    asyncio.run(main())


def test_a_client_that_leaves_cancels_and_closes_the_generator() -> None:
    async def main() -> None:
        seen: list[str] = []
        closed: list[dict[str, Any]] = []

        async def feed() -> AsyncIterator[str]:
            try:
                n = 0
                while True:
                    yield str(n)
                    n += 1
                    await asyncio.sleep(0.01)  # pace: the generator's, 10 ms apart
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            finally:
                seen.append("finally")

        async def on_close(message: dict[str, Any]) -> None:
            closed.append(message)

        client = Client()
        before = len(asyncio.all_tasks())
        task = _run(EventSourceResponse(feed(), client_close_handler_callable=on_close), client)
        await wait_for(lambda: b"data: 1\r\n\r\n" in client.body, what="the stream going")
        client.leave()
        await asyncio.wait_for(task, 2)  # returns normally
        assert seen == ["cancelled", "finally"]
        assert closed == [{"type": "http.disconnect"}]
        assert b"data: 0\r\n\r\n" in client.body
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) <= before  # no watch, timer or sender left
        assert ours.open_streams() == 0

    asyncio.run(main())


def test_pings_go_out_on_sse_starlettes_schedule_whatever_the_traffic() -> None:
    """By default a ping every ``ping`` seconds, busy stream or not, with
    sse-starlette's text (``: ping - <UTC time>``) and separator."""

    async def main() -> None:
        async def busy() -> AsyncIterator[str]:
            while True:
                yield "x"
                await asyncio.sleep(0.01)  # pace: a busy stream, an event every 10 ms

        loop = asyncio.get_running_loop()
        client = Client()
        started = loop.time()
        task = _run(EventSourceResponse(busy(), ping=0.05), client)
        await wait_for(
            lambda: len(_pings(client)) >= 4 and client.body.count(b"data: x\r\n\r\n") >= 15,
            what="4 pings among 15 events",
        )
        client.leave()
        await asyncio.wait_for(task, 2)
        took = loop.time() - started
        pings = _pings(client)
        assert _on_schedule(len(pings), took, 0.05), (pings, took)
        assert all(
            re.fullmatch(rb": ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00:00\r\n\r\n", p)
            for p in pings
        ), pings
        assert client.body.count(b"data: x\r\n\r\n") >= 15  # the events went on

        made: list[int] = []

        def factory() -> ServerSentEvent:
            made.append(1)
            return ServerSentEvent(comment="custom")

        other = Client()
        task2 = _run(EventSourceResponse(busy(), ping=0.05, ping_message_factory=factory), other)
        await wait_for(lambda: b": custom\r\n\r\n" in other.body, what="a custom ping")
        other.leave()
        await asyncio.wait_for(task2, 2)
        assert made and b": custom\r\n\r\n" in other.body

    asyncio.run(main())


def test_with_ping_when_idle_pings_go_out_only_when_the_stream_is_idle() -> None:
    async def main() -> None:
        async def idle() -> AsyncIterator[str]:
            yield "first"
            await asyncio.sleep(3600)
            yield "never"

        loop = asyncio.get_running_loop()
        client = Client()
        started = loop.time()
        task = _run(EventSourceResponse(idle(), ping=0.05, ping_when_idle=True), client)
        await wait_for(lambda: len(_pings(client)) >= 3, what="3 pings of an idle stream")
        took = loop.time() - started
        pings = _pings(client)
        assert _on_schedule(len(pings), took, 0.05), (pings, took)

        async def busy() -> AsyncIterator[str]:
            while True:
                yield "x"
                await asyncio.sleep(0.01)  # pace: a busy stream, an event every 10 ms

        made: list[int] = []

        def factory() -> ServerSentEvent:
            made.append(1)
            return ServerSentEvent(comment="custom")

        other = Client()
        # events every 10 ms, a ping due after 0.5 s without one: only a loop stalled for
        # half a second (not a busy machine's few tens of ms) could make one
        task2 = _run(
            EventSourceResponse(
                busy(), ping=0.5, ping_message_factory=factory, ping_when_idle=True
            ),
            other,
        )
        # (the ping timer runs on the loop's own clock: only time passing can show this)
        # pace: events flow for over two ping intervals: never idle, so never a ping
        await asyncio.sleep(1.2)
        assert not made and b": custom" not in other.body  # events flowed: no ping needed
        client.leave()
        other.leave()
        await asyncio.wait_for(asyncio.gather(task, task2), 2)

        quiet = Client()
        task3 = _run(
            EventSourceResponse(
                idle(), ping=0.05, ping_message_factory=factory, ping_when_idle=True
            ),
            quiet,
        )
        await wait_for(lambda: b": custom\r\n\r\n" in quiet.body, what="a ping of a quiet stream")
        assert made and b": custom\r\n\r\n" in quiet.body
        quiet.leave()
        await asyncio.wait_for(task3, 2)

    asyncio.run(main())


def test_a_send_that_does_not_complete_ends_the_stream_with_send_timeout_error() -> None:
    async def main() -> None:
        closed: list[str] = []

        async def feed() -> AsyncIterator[str]:
            try:
                while True:
                    yield "x" * 100
                    await asyncio.sleep(0)
            finally:
                closed.append("closed")

        client = Client()
        task = _run(EventSourceResponse(feed(), send_timeout=0.2), client)
        await wait_for(lambda: client.body, what="the stream writing")
        client.block = asyncio.get_running_loop().create_future()  # the client stops reading
        with pytest.raises(SendTimeoutError):
            await asyncio.wait_for(task, 3)
        assert closed == ["closed"]

        # the same for a ping: a stream that only pings
        async def idle() -> AsyncIterator[str]:
            await asyncio.sleep(3600)
            yield "never"

        client = Client()
        client.block = asyncio.get_running_loop().create_future()
        task = _run(EventSourceResponse(idle(), ping=0.05, send_timeout=0.2), client)
        with pytest.raises(SendTimeoutError):
            await asyncio.wait_for(task, 3)

    asyncio.run(main())


def test_shutdown_tells_the_generator_waits_the_grace_period_and_ends_cleanly() -> None:
    async def main() -> None:
        said: list[str] = []

        def feed(event: asyncio.Event) -> AsyncIterator[str]:
            async def gen() -> AsyncIterator[str]:
                yield "hello"
                await event.wait()
                yield "goodbye"
                said.append("goodbye")
                await asyncio.sleep(3600)  # a generator that does not end by itself
                yield "never"

            return gen()

        clients = [Client(), Client()]
        events = [asyncio.Event(), asyncio.Event()]
        tasks = [
            _run(EventSourceResponse(feed(e), shutdown_event=e, shutdown_grace_period=0.2), c)
            for c, e in zip(clients, events, strict=True)
        ]
        await wait_for(lambda: all(c.body == b"data: hello\r\n\r\n" for c in clients), what="hello")
        assert shutdown_streams() == 2
        await asyncio.wait_for(asyncio.gather(*tasks), 3)
        for client in clients:
            assert client.body == b"data: hello\r\n\r\ndata: goodbye\r\n\r\n" and client.ended
        assert said == ["goodbye", "goodbye"]

    asyncio.run(main())


def test_app_status_should_exit_ends_streams_as_with_sse_starlette() -> None:
    async def main() -> None:
        async def endless() -> AsyncIterator[str]:
            while True:
                yield "x"
                await asyncio.sleep(0.01)  # pace: the generator's, 10 ms apart

        client = Client()
        task = _run(EventSourceResponse(endless()), client)
        await wait_for(lambda: client.body, what="the stream going")
        AppStatus.should_exit = True
        try:
            await asyncio.wait_for(task, 2)
            assert client.ended
            late = Client()  # while it is true, a new stream ends at once
            await asyncio.wait_for(_run(EventSourceResponse(endless()), late), 2)
            assert late.ended
        finally:
            AppStatus.should_exit = False

    asyncio.run(main())


def test_data_sender_callable_runs_beside_the_stream_and_is_stopped_with_it() -> None:
    async def main() -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        state: list[str] = []

        async def feed() -> AsyncIterator[str]:
            while True:
                yield await queue.get()

        async def sender() -> None:
            try:
                for n in range(3):
                    await queue.put(f"pushed {n}")
                await asyncio.sleep(3600)
            finally:
                state.append("sender stopped")

        client = Client()
        task = _run(EventSourceResponse(feed(), data_sender_callable=sender), client)
        await wait_for(lambda: client.body.count(b"\r\n\r\n") >= 3, what="3 events")
        assert client.body == b"data: pushed 0\r\n\r\ndata: pushed 1\r\n\r\ndata: pushed 2\r\n\r\n"
        client.leave()
        await asyncio.wait_for(task, 2)
        await asyncio.sleep(0)
        assert state == ["sender stopped"]

    asyncio.run(main())


def test_last_event_id_is_decoded_as_utf8() -> None:
    from starlette.requests import Request

    client = Client()
    assert last_event_id(client.scope) == "caf\u00e9-\ufffd"
    assert last_event_id(Request(client.scope)) == "caf\u00e9-\ufffd"
    assert last_event_id({"type": "http", "headers": []}) is None


def test_a_thousand_clients_that_leave_leave_nothing_behind() -> None:
    async def main() -> None:
        async def feed() -> AsyncIterator[str]:
            while True:
                yield "x"
                await asyncio.sleep(0.05)  # pace: the generator's, 50 ms apart

        before = len(asyncio.all_tasks())
        clients = [Client() for _ in range(1000)]
        tasks = [_run(EventSourceResponse(feed(), ping=0.1, send_timeout=1), c) for c in clients]
        await wait_for(
            lambda: ours.open_streams() == 1000 and all(c.body for c in clients),
            timeout=30,
            what="every stream open and streaming",
        )
        assert ours.open_streams() == 1000
        for client in clients:
            client.leave()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await wait_for(lambda: len(asyncio.all_tasks()) <= before, what="no task left")
        assert len(asyncio.all_tasks()) <= before
        gc.collect()
        assert ours.open_streams() == 0
        loop = asyncio.get_running_loop()
        assert not [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]

    asyncio.run(main())


def test_the_import_is_the_only_change() -> None:
    """Every public name of sse-starlette exists here, and the response takes
    every argument theirs takes, by the same names."""
    import inspect

    assert set(sse_starlette.__all__) <= set(ours.__all__)
    theirs = inspect.signature(TheirResponse.__init__).parameters
    mine = inspect.signature(EventSourceResponse.__init__).parameters
    keyword_only = [n for n, p in mine.items() if p.kind is p.KEYWORD_ONLY]
    assert list(theirs) == [n for n in mine if n not in keyword_only]
    # ours only, never in their positions
    assert keyword_only == ["coalesce", "busy_batch_delay", "ping_when_idle", "compress"]
    for name in ("DEFAULT_PING_INTERVAL", "DEFAULT_CLEANUP_TIMEOUT", "DEFAULT_SEPARATOR"):
        assert getattr(EventSourceResponse, name) == getattr(TheirResponse, name)
    assert ServerSentEvent.DEFAULT_SEPARATOR == sse_starlette.ServerSentEvent.DEFAULT_SEPARATOR
    # the originals' module paths: a mechanical rename of sse_starlette.X works
    import sse_fast.starlette.event
    import sse_fast.starlette.sse

    used = {
        "sse": ["EventSourceResponse", "AppStatus", "SendTimeoutError", "ServerSentEvent"],
        "event": ["ServerSentEvent", "JSONServerSentEvent", "ensure_bytes"],
    }
    for module, names in used.items():
        for name in names:
            assert hasattr(getattr(sse_starlette, module), name)
            assert getattr(getattr(sse_fast.starlette, module), name) is getattr(ours, name)


def test_starlettes_own_send_wrappers_are_skipped_and_a_users_are_kept() -> None:
    """Past the response start, body messages go to the server's ``send`` itself when
    only Starlette's pass-through wrappers are in between (so Granian's eager write
    is seen); a wrapper of the user's own (a middleware) is kept."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    received: list[Any] = []

    class Recording(EventSourceResponse):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            received.append(send)
            await super().__call__(scope, receive, send)

    async def endpoint(request: Any) -> Recording:
        return Recording(iter(["x"]))

    class UserMiddleware:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def counting_send(message: Any) -> None:
                await send(message)

            await self.app(scope, receive, counting_send)

    async def main() -> None:
        for middleware in ([], [Middleware(UserMiddleware)]):
            received.clear()
            app = Starlette(routes=[Route("/", endpoint)], middleware=middleware)
            client = Client()
            await app(client.scope, client.receive, client.send)
            assert client.body == b"data: x\r\n\r\n" and client.ended
            inner = _stream._innermost_send(received[0])
            if middleware:
                assert getattr(inner, "__qualname__", "").endswith("counting_send")
            else:
                assert getattr(inner, "__func__", None) is Client.send  # the server's own

    asyncio.run(main())


def test_items_ready_at_once_go_out_together_and_waiting_ones_are_not_held() -> None:
    """A backlog (a queue with items waiting) is written in few writes; an item
    that must be waited for is written as soon as it comes, never held back
    behind the next one."""

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(500):
            queue.put_nowait(n)

        async def feed() -> AsyncIterator[dict[str, Any]]:
            while True:
                n = await queue.get()
                if n < 0:
                    return
                yield {"data": "x" * 200, "id": str(n)}

        client = Client()
        task = _run(EventSourceResponse(feed(), coalesce=True, sep="\n"), client)
        await wait_for(lambda: b"id: 499\n" in client.body, what="the backlog written")
        writes = len(client.messages) - 1
        assert writes <= 5  # 500 events of ~220 bytes: two 64 KiB writes and the rest
        queue.put_nowait(500)  # one more, alone: out at once, not held for a later one
        last = b"id: 500\ndata: " + b"x" * 200 + b"\n\n"
        await wait_for(lambda: client.body.endswith(last), what="the one more, alone")
        assert client.body.endswith(last)
        assert len(client.messages) - 1 == writes + 1
        queue.put_nowait(-1)
        await asyncio.wait_for(task, 2)
        events = Parser().feed(client.body)
        assert [e.id for e in events] == [str(n) for n in range(501)]

    asyncio.run(main())


@pytest.mark.parametrize("coalesce", [False, True])
def test_a_generator_timeout_never_interrupts_a_write(coalesce: bool) -> None:
    """A generator that waits with a timeout of its own (keep-alives when idle)
    and a client whose writes block for a while: with ``coalesce`` the generator's
    timeouts fire while writes are still on their way (without, it is not asked
    until the write is done); they reach the generator, not the writes, and
    every event arrives in order."""

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        timeouts = 0

        async def feed() -> AsyncIterator[dict[str, Any]]:
            nonlocal timeouts
            while True:
                try:
                    async with asyncio.timeout(0.02):
                        n = await queue.get()
                except TimeoutError:
                    timeouts += 1
                    yield {"comment": "idle"}
                    continue
                if n < 0:
                    return
                yield {"data": str(n), "id": str(n)}

        client = Client()
        task = _run(EventSourceResponse(feed(), coalesce=coalesce), client)
        await wait_for(lambda: b": idle" in client.body, what="the generator's first timeout")
        client.block = asyncio.get_running_loop().create_future()  # writes wait
        queue.put_nowait(1)
        await wait_for(lambda: client.stuck, what="a write held")
        if coalesce:  # ~10 of the generator's timeouts, writes held
            more = timeouts + 10
            await wait_for(lambda: timeouts >= more, what="10 timeouts while writes are held")
        else:  # not asked while its write is held: none of its timeouts runs meanwhile
            # a witness on the same loop times out ten times, as the generator would
            for _ in range(10):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await asyncio.get_running_loop().create_future()  # never set
            assert client.stuck == 1
        assert not task.done()
        client.block.set_result(None)
        client.block = None
        queue.put_nowait(2)
        await wait_for(lambda: b"id: 2" in client.body, what="event 2")
        queue.put_nowait(-1)
        await asyncio.wait_for(task, 2)  # ended normally, not cancelled
        assert [e.id for e in Parser().feed(client.body)] == ["1", "2"]
        assert client.ended

    asyncio.run(main())


# ---------------------------------------------------------------- a saturated loop


class TimedClient(Client):
    """A Client that notes when each body message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[float] = []

    async def send(self, message: dict[str, Any]) -> None:
        await super().send(message)
        if message["type"] == "http.response.body":
            self.arrived.append(asyncio.get_running_loop().time())

    @property
    def writes(self) -> int:
        """Body messages with events in them."""
        return sum(1 for m in self.messages[1:] if m.get("body"))


@pytest.fixture
def saturated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every window of load makes the loop busy (the real pacer, its threshold at 0,
    a window per probe): the loop counts as saturated 10 ms after a stream opens."""
    monkeypatch.setattr(_pacing, "ENGAGE", 0.0)
    monkeypatch.setattr(_pacing, "WINDOW", 0.0)


async def _until_busy() -> None:
    pacer = _pacing.pacer(asyncio.get_running_loop())
    await wait_for(lambda: pacer.busy, interval=0.005, what="the loop turned busy")


@pytest.mark.usefixtures("saturated")
@pytest.mark.parametrize("source", ["queue", "timer"])
def test_while_the_loop_is_saturated_close_events_share_writes_and_none_is_lost(
    source: str,
) -> None:
    """Events 5 ms apart on a saturated loop go out a write per tick, each within
    busy_batch_delay (+ a margin) of being made, all of them in order. From a
    queue, the generator is not asked while a write is held (the backlog builds
    in the queue: one wake-up per tick); a generator on a timer keeps its pace
    (its writes are deferred instead, the generator goes on)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        made: list[float] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        backlog = 0

        async def produce() -> None:
            for n in range(80):
                made.append(loop.time())
                queue.put_nowait(n)
                await asyncio.sleep(0.005)  # pace: the producer's, 5 ms apart

        async def from_queue() -> AsyncIterator[dict[str, Any]]:
            nonlocal backlog
            await _until_busy()
            producer = loop.create_task(produce())
            for _ in range(80):
                n = await queue.get()
                backlog = max(backlog, queue.qsize() + 1)
                yield {"data": n, "id": str(n)}
            await producer

        async def on_timer() -> AsyncIterator[dict[str, Any]]:
            await _until_busy()
            for n in range(80):
                made.append(loop.time())
                yield {"data": n, "id": str(n)}
                await asyncio.sleep(0.005)  # pace: a generator on a timer, 5 ms apart

        client = TimedClient()
        feed = from_queue() if source == "queue" else on_timer()
        started = loop.time()
        await asyncio.wait_for(_run(EventSourceResponse(feed, coalesce=True), client), 10)
        events = Parser().feed(client.body)
        assert [e.id for e in events] == [str(n) for n in range(80)]
        assert client.writes <= 80 // 3, client.writes  # ~0.4 s of events, ~a write per tick
        carried: list[float] = []  # when the write that carried each event arrived
        for message, arrived in zip(client.messages[1:], client.arrived, strict=True):
            carried += [arrived] * len(Parser().feed(message.get("body", b"")))
        lags = [sent - made_at for sent, made_at in zip(carried, made, strict=True)]
        # what must not happen is an event held until the stream's end (seconds); the
        # margin over busy_batch_delay absorbs a loaded machine (172 ms seen in CI)
        assert max(lags) < 0.05 + 0.45, max(lags)
        if source == "queue":
            assert backlog >= 3, backlog  # items waited in the queue, not in a wake-up each
        else:
            # 80 x 5 ms; held at each event (1 a tick) it would take 4 s
            assert loop.time() - started < 1.5 + 0.3

    asyncio.run(main())


@pytest.mark.usefixtures("saturated")
def test_while_the_loop_is_saturated_an_event_after_a_quiet_spell_is_not_held() -> None:
    """Events further apart than busy_batch_delay go out one write each, at once;
    busy_batch_delay=None never holds one."""

    async def main() -> None:
        async def feed(gap: float, count: int) -> AsyncIterator[str]:
            await _until_busy()
            for n in range(count):
                yield str(n)
                await asyncio.sleep(gap)  # pace: the generator's, gap apart

        apart, close = TimedClient(), TimedClient()
        unpaced = EventSourceResponse(feed(0.005, 30), coalesce=True, busy_batch_delay=None)
        both = (
            _run(EventSourceResponse(feed(0.08, 6), coalesce=True), apart),
            _run(unpaced, close),
        )
        await asyncio.wait_for(asyncio.gather(*both), 10)  # the first keeps the pacer on
        assert apart.writes == 6
        assert close.writes == 30
        assert [e.data for e in Parser().feed(close.body)] == [str(n) for n in range(30)]

    asyncio.run(main())


@pytest.mark.usefixtures("saturated")
def test_shutdown_sends_the_events_being_held() -> None:
    async def main() -> None:
        held = asyncio.Event()

        async def feed() -> AsyncIterator[str]:
            await _until_busy()
            yield "first"
            await asyncio.sleep(0.005)  # pace: the second comes 5 ms after the first
            held.set()
            yield "second"  # within the delay of the first write: held
            await asyncio.sleep(3600)

        client = TimedClient()
        task = _run(EventSourceResponse(feed(), coalesce=True, busy_batch_delay=1.0), client)
        await asyncio.wait_for(held.wait(), 5)
        # the generator's step that set it yielded "second" (the stream took it in the same
        # step): not written, but held for the pacer's tick, 1 s away
        loop = asyncio.get_running_loop()
        pacer = _pacing.pacer(loop)
        assert b"second" not in client.body
        assert pacer._waiters and pacer._tick_at - loop.time() > 0.5
        assert shutdown_streams() == 1
        await asyncio.wait_for(task, 2)
        assert [e.data for e in Parser().feed(client.body)] == ["first", "second"]
        assert client.ended

    asyncio.run(main())


@pytest.mark.usefixtures("saturated")
def test_a_client_that_leaves_while_events_are_held_leaves_nothing_behind() -> None:
    async def main() -> None:
        finished: list[str] = []

        async def feed() -> AsyncIterator[str]:
            try:
                await _until_busy()
                while True:
                    yield "x"
                    await asyncio.sleep(0.001)  # pace: the generator's, 1 ms apart
            finally:
                finished.append("finally")

        before = len(asyncio.all_tasks())
        clients = [TimedClient() for _ in range(20)]
        tasks = [
            _run(EventSourceResponse(feed(), coalesce=True, busy_batch_delay=1.0), c)
            for c in clients
        ]
        pacer = _pacing.pacer(asyncio.get_running_loop())
        await wait_for(
            lambda: pacer.streams == 20 and pacer.busy and pacer._waiters, what="events held"
        )
        assert pacer.streams == 20 and pacer.busy
        for client in clients:
            client.leave()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert finished == ["finally"] * 20
        assert pacer.streams == 0 and not pacer.busy and pacer._monitor is None
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) <= before and ours.open_streams() == 0

    asyncio.run(main())


@pytest.mark.parametrize("delay", [0, -1, 1.5, float("nan")])
def test_busy_batch_delay_out_of_range_is_refused(delay: float) -> None:
    with pytest.raises(ValueError, match="busy_batch_delay must be > 0 and <= 1 second"):
        EventSourceResponse(iter(()), busy_batch_delay=delay)


# ---------------------------------------------------------------- sse-starlette's seams


async def _idle() -> AsyncIterator[str]:
    yield "first"
    await asyncio.Event().wait()  # (never set: only an interruption ends it)
    yield "never"


def test_a_replaced_exit_listener_is_what_tells_a_stream_of_a_shutdown() -> None:
    """``_listen_for_exit_signal`` replaced on a response or in a subclass: its
    return shuts the stream down (the shutdown event set, the last chunk sent),
    and it alone does (the replacement replaces the registry, as under
    sse-starlette a replacement replaces its watcher)."""

    async def main() -> None:
        signal = asyncio.Event()

        async def exit_signal() -> None:
            await signal.wait()

        class Replaced(EventSourceResponse):
            _listen_for_exit_signal = staticmethod(exit_signal)

        shutdown = asyncio.Event()
        patched = EventSourceResponse(_idle(), shutdown_event=shutdown)
        patched._listen_for_exit_signal = exit_signal  # type: ignore[method-assign]
        clients = [Client(), Client()]
        tasks = [_run(patched, clients[0]), _run(Replaced(_idle()), clients[1])]
        await wait_for(lambda: all(c.body == b"data: first\r\n\r\n" for c in clients), what="first")
        assert ours.open_streams() == 0 and shutdown_streams() == 0
        assert not any(t.done() for t in tasks)
        signal.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 3)
        assert all(c.ended for c in clients) and shutdown.is_set()

    asyncio.run(main())


def test_the_exit_listener_as_it_is_returns_on_a_shutdown() -> None:
    async def main() -> None:
        listen = EventSourceResponse._listen_for_exit_signal
        waiting = asyncio.get_running_loop().create_task(listen())
        await wait_for(lambda: ours.open_streams() == 1, what="the listener registered")
        assert shutdown_streams() == 1
        await asyncio.wait_for(waiting, 3)
        assert ours.open_streams() == 0
        AppStatus.should_exit = True
        try:
            await asyncio.wait_for(listen(), 3)  # at once while the server is exiting
        finally:
            AppStatus.should_exit = False

    asyncio.run(main())


def test_a_replaced_anyio_sleep_paces_a_streams_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    """sse-starlette's tests drive pings by patching ``sse_starlette.sse.anyio.sleep``:
    the stream's pings then wait on the replacement (one call per ping, with the
    ping interval), written in order with the events."""

    async def main() -> None:
        ticks: asyncio.Queue[None] = asyncio.Queue()
        asked: list[float] = []

        async def logical_sleep(seconds: float) -> None:
            asked.append(seconds)
            await ticks.get()

        monkeypatch.setattr("sse_fast.starlette.sse.anyio.sleep", logical_sleep)
        client = Client()
        factory = lambda: ServerSentEvent(comment="tick")  # noqa: E731
        task = _run(EventSourceResponse(_idle(), ping=3600, ping_message_factory=factory), client)
        await wait_for(
            lambda: client.body == b"data: first\r\n\r\n" and len(asked) == 1,
            what="first, and a ping's sleep",
        )
        for _ in range(2):
            ticks.put_nowait(None)
        await wait_for(lambda: client.body.count(b": tick\r\n\r\n") == 2, what="2 ticks")
        assert asked[:2] == [3600, 3600]
        client.leave()
        await asyncio.wait_for(task, 3)

        # a ping that cannot be written within send_timeout ends the stream so too
        client = Client()
        task = _run(EventSourceResponse(_idle(), ping=3600, send_timeout=0.05), client)
        await wait_for(lambda: client.body == b"data: first\r\n\r\n", what="first")
        client.block = asyncio.get_running_loop().create_future()
        ticks.put_nowait(None)
        with pytest.raises(SendTimeoutError):
            await asyncio.wait_for(task, 3)

    asyncio.run(main())


def test_the_seams_are_looked_up_once_per_stream_not_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left as they are, the seams cost a stream one look-up when it starts and
    nothing per event: its pings stay on a timer, its shutdown in the registry."""
    from sse_fast.starlette import sse as sse_module

    class CountingAnyio:
        lookups = 0

        @property
        def sleep(self) -> Any:
            CountingAnyio.lookups += 1
            return sse_module._ANYIO_SLEEP

    monkeypatch.setattr(sse_module, "anyio", CountingAnyio())
    seen = []

    async def main() -> None:
        client = Client()
        response = EventSourceResponse(iter(range(2000)), ping=15)
        seen.append(response._replaced_seams())
        assert ours.open_streams() == 0
        await asyncio.wait_for(_run(response, client), 10)
        assert client.ended and client.body.count(b"data: ") == 2000

    asyncio.run(main())
    assert seen == [(None, None)]
    assert CountingAnyio.lookups == 2  # (one for the check above, one for the stream)


def test_a_shutdown_while_a_write_is_stuck_ends_the_stream_without_its_last_chunk() -> None:
    """A client that stopped reading: the shutdown does not wait on a write behind
    the stuck one (sse-starlette's streams end so on every shutdown)."""

    async def main() -> None:
        closed: list[str] = []

        async def feed() -> AsyncIterator[str]:
            try:
                yield "first"
                yield "stuck"
            finally:
                closed.append("closed")

        client = Client()
        client.block = asyncio.get_running_loop().create_future()  # never completes
        task = _run(EventSourceResponse(feed()), client)
        await wait_for(lambda: client.stuck == 1, what="the first write on its way")
        assert shutdown_streams() == 1
        await asyncio.wait_for(task, 3)
        assert closed == ["closed"] and not client.ended

    asyncio.run(main())


def test_an_anyio_scope_cancelled_around_a_response_lets_its_cleanup_run() -> None:
    """As sse-starlette shields it: a scope cancelled around the response (a task
    group's, a timeout's) while the generator waits at a ``yield`` (its item's
    write is on its way) cancels the stream, not the generator's cleanup."""
    import anyio

    async def main() -> None:
        cleanup: list[str] = []

        async def feed() -> AsyncIterator[str]:
            try:
                yield "first"
            finally:
                await asyncio.sleep(0)  # cleanup that awaits
                await asyncio.sleep(0.01)  # pace: (a timer, too)
                cleanup.append("closed")

        client = Client()
        client.block = asyncio.get_running_loop().create_future()  # the write waits
        scope = anyio.CancelScope()

        async def cancel_once_stuck() -> None:
            await wait_for(lambda: client.stuck == 1, what="the write on its way")
            scope.cancel()

        canceller = asyncio.get_running_loop().create_task(cancel_once_stuck())
        with scope:
            await EventSourceResponse(feed())(client.scope, client.receive, client.send)
        await canceller
        assert scope.cancelled_caught and cleanup == ["closed"]

    anyio.run(main)


@pytest.mark.parametrize("coding", ["gzip", "zstd", "deflate"])
def test_compress_true_compresses_what_the_request_asks_for_each_write_flushed(
    coding: str,
) -> None:
    """The opt-in: ``compress=True`` and an ``Accept-Encoding``: the response says its
    coding and ``Vary``, every body message decodes whole as it comes (no event held),
    and decoded the stream is the plain one's; a request that asks for none, or
    ``compress`` left off, gets the bytes sse-starlette writes."""
    from ..support.decoding import Decoder

    items = ["a", {"event": "e", "data": {"n": 1}}, {"comment": "c"}, "z" * 300]

    async def main() -> None:
        plain = Client()
        await _run(EventSourceResponse(iter(items)), plain)
        asked = Client()
        asked.scope["headers"] = [(b"accept-encoding", coding.encode())]
        await _run(EventSourceResponse(iter(items), compress=True), asked)
        assert asked.headers[b"content-encoding"] == coding.encode()
        assert asked.headers[b"vary"] == b"accept-encoding"
        decoder = Decoder(coding)
        decoded = [decoder.feed(m["body"]) for m in asked.messages[1:]]
        plain_bodies = [m["body"] for m in plain.messages[1:]]
        assert decoded == plain_bodies  # write by write
        assert decoder.ended() and asked.ended
        unasked = Client()
        await _run(EventSourceResponse(iter(items), compress=True), unasked)
        assert b"content-encoding" not in unasked.headers
        assert unasked.headers[b"vary"] == b"accept-encoding" and unasked.body == plain.body

    asyncio.run(main())
