"""The chat example's room and its ``/chat/send``, in process: the examples'
application over httpx's ASGI transport, clocks given (its page is tested in
tests/e2e/test_examples.py, in Chromium, whose driver runs an event loop of its own
in the test's thread: hence a module apart)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from examples import chat
from examples.app import create_app
from sse_fast.settings import Settings


def test_a_chat_client_that_stops_reading_is_cut_and_resumes_without_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its queue full, the stream ends with nothing queued after what it got: the
    browser's Last-Event-ID is then the last message it received, and the resume
    brings every later one."""
    monkeypatch.setattr(chat, "QUEUE", 3)

    async def main() -> tuple[str, list[int]]:
        room = chat.ChatRoom(None)
        stream = room.stream("ana", None)
        got = [await anext(stream)]  # retry
        room.post("bob", "m1")
        got += [await anext(stream), await anext(stream)]  # join, m1
        for n in range(2, 7):  # ana stops reading: m2-m4 fill her queue, m5 cuts her
            room.post("bob", f"m{n}")
        async for item in stream:
            got.append(item)
        last = [item["id"] for item in got if item.get("event") == "message"][-1]
        return last, [m["id"] for m in room.since(last)]

    last, resumed = asyncio.run(main())
    assert last == "1"  # what she got before the cut: nothing queued after it was kept
    assert resumed == [2, 3, 4, 5, 6]


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def example_app(room: chat.ChatRoom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Starlette:
    """The examples' application (``create_app``, not started: the chat needs no
    lifespan) with ``room`` as its chat instead of the one it made."""
    monkeypatch.setenv("SSE_FAST_EXAMPLES_DATA", str(tmp_path / "unused"))
    app = create_app(Settings())
    app.state.chat = room
    return app


def client_at(app: Starlette, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://chat.test")


async def say(client: httpx.AsyncClient, name: str, text: str) -> httpx.Response:
    return await client.post("/chat/send", json={"name": name, "text": text})


def test_a_burst_past_the_limit_gets_429_with_retry_after_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    room = chat.ChatRoom(tmp_path / "chat.jsonl", limit=chat.SendLimit(clock=clock))
    app = example_app(room, tmp_path, monkeypatch)
    burst = chat.SEND_BURST
    refusal = (
        f"too many messages: at most {burst} at once, then 1 a second from each client;"
        " send again in 1 s"
    )

    async def main() -> None:
        async with client_at(app, "10.0.0.1") as ana, client_at(app, "10.0.0.2") as ben:
            for n in range(burst):
                assert (await say(ana, "ana", f"m{n}")).status_code == 200
            for name in ("ana", "another name"):  # the address counts, not the name
                response = await say(ana, name, "one too many")
                assert response.status_code == 429
                assert response.headers["Retry-After"] == "1"
                assert response.json() == {"error": refusal}
            assert room.last_id == burst  # nothing stored from the refused
            # another client has its own allowance; messages refused (400) spend none of it
            for _ in range(burst):
                assert (await say(ben, "ben", "x" * (chat.MAX_TEXT + 1))).status_code == 400
            for n in range(burst):
                assert (await say(ben, "ben", f"b{n}")).status_code == 200
            assert (await say(ben, "ben", "one too many")).status_code == 429
            # one a second after the burst
            clock.now += 1
            assert (await say(ana, "ana", "after a second")).status_code == 200
            assert (await say(ana, "ana", "too soon")).status_code == 429
            clock.now += 0.5
            response = await say(ana, "ana", "half a second")
            assert response.status_code == 429 and response.headers["Retry-After"] == "1"
            clock.now += 0.5
            assert (await say(ana, "ana", "a second later")).status_code == 200

    asyncio.run(main())
    assert room.last_id == 2 * burst + 2


def test_the_limit_forgets_idle_clients_and_remembers_at_most_its_most() -> None:
    clock = Clock()
    limit = chat.SendLimit(burst=2, per_second=0.5, most=3, clock=clock)
    for client in ("a", "b", "c", "a", "d"):
        assert limit.take(client) == 0
    assert list(limit.buckets) == ["c", "a", "d"]  # b, the least recently used, went
    assert limit.take("a") == 2.0  # a spent both: the next in 2 s
    clock.now += 3.9  # 4 s fill an empty bucket: none is full yet
    limit.take("e")
    assert list(limit.buckets) == ["d", "a", "e"]
    clock.now += 0.1
    limit.take("e")
    assert list(limit.buckets) == ["e"]  # a full bucket is a new one: forgotten


def message_ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


async def backlog(room: chat.ChatRoom, last: str | None) -> tuple[str, list[int]]:
    """What a stream resuming from ``last`` is sent before it joins: its comment, the ids."""
    stream = room.stream("ana", last)
    comment = (await anext(stream))["comment"]
    ids = []
    async for item in stream:
        if item.get("event") != "message":
            break
        ids.append(int(item["id"]))
    await stream.aclose()
    return comment, ids


def test_the_file_keeps_the_last_n_and_a_restart_resumes_with_the_same_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chat.jsonl"
    room = chat.ChatRoom(path, kept=5)
    app = example_app(room, tmp_path, monkeypatch)

    async def send(texts: range) -> list[int]:
        async with client_at(app, "10.0.0.1") as client:
            return [(await say(client, "bot", f"m{n}")).json()["id"] for n in texts]

    assert asyncio.run(send(range(1, 10))) == list(range(1, 10))
    assert message_ids(path) == list(range(1, 10))  # appended until twice kept
    assert asyncio.run(send(range(10, 11))) == [10]
    assert message_ids(path) == [6, 7, 8, 9, 10]  # then the last 5, exactly
    assert list(tmp_path.glob("chat.jsonl*")) == [path]  # no temporary file left
    assert asyncio.run(send(range(11, 13))) == [11, 12]
    assert message_ids(path) == [6, 7, 8, 9, 10, 11, 12]  # appended again
    assert [m["id"] for m in room.messages] == [8, 9, 10, 11, 12]

    restarted = chat.ChatRoom(path, kept=5)  # the server restarts
    assert [m["id"] for m in restarted.messages] == [8, 9, 10, 11, 12]
    assert [m["text"] for m in restarted.messages] == [f"m{n}" for n in range(8, 13)]
    assert restarted.post("bot", "m13")["id"] == 13  # ids go on, none reused
    assert message_ids(path) == list(range(6, 14))

    comment, ids = asyncio.run(backlog(restarted, "10"))
    assert (comment, ids) == ("3 earlier messages", [11, 12, 13])
    comment, ids = asyncio.run(backlog(restarted, "8"))  # the oldest kept is 9: no gap
    assert (comment, ids) == ("5 earlier messages", [9, 10, 11, 12, 13])
    for gone in ("7", "1", "99", "not an id"):  # compacted away, or never ours: the latest
        comment, ids = asyncio.run(backlog(restarted, gone))
        assert ids == [9, 10, 11, 12, 13]
        assert comment == (
            "5 earlier messages"
            " (Last-Event-ID is not one of the 5 kept: the latest; some are missed)"
        )


def test_a_file_from_before_the_bound_is_cut_to_the_last_n_at_start(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    lines = [json.dumps({"id": n, "name": "bot", "text": f"m{n}", "at": 0}) for n in range(1, 31)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    room = chat.ChatRoom(path, kept=5)
    assert message_ids(path) == [26, 27, 28, 29, 30]
    assert room.post("bot", "next")["id"] == 31


def test_a_send_body_is_bounded_and_any_bytes_get_an_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = chat.ChatRoom(tmp_path / "chat.jsonl")
    app = example_app(room, tmp_path, monkeypatch)
    # the longest message, every character escaped, fits
    longest = json.dumps(
        {"name": "\U0001f600" * chat.MAX_NAME, "text": "\U0001f600" * chat.MAX_TEXT}
    )
    assert len(longest) <= chat.MAX_BODY

    async def main() -> list[tuple[int, str]]:
        async with client_at(app, "10.0.0.1") as client:
            answers = []
            for body in (
                longest.encode(),
                b" " * (chat.MAX_BODY + 1),
                b'{"name": "\xff", "text": "x"}',  # not UTF-8
                b"[" * 5000 + b"]" * 5000,
            ):
                response = await client.post("/chat/send", content=body)
                answers.append((response.status_code, response.json().get("error", "")))
            return answers

    assert asyncio.run(main()) == [
        (200, ""),
        (413, f"the body is over {chat.MAX_BODY} bytes: send one short message"),
        (400, 'the body is not JSON: {"name": ..., "text": ...}'),
        (413, f"the body is over {chat.MAX_BODY} bytes: send one short message"),
    ]
    assert room.last_id == 1


def test_a_line_torn_by_a_crash_is_dropped_at_start(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    whole = [json.dumps({"id": i, "name": "a", "text": str(i), "at": 0.0}) + "\n" for i in (1, 2)]
    path.write_text("".join(whole) + '{"id": 3, "name": "a", "te', encoding="utf-8")
    room = chat.ChatRoom(path, kept=5)
    assert [m["id"] for m in room.messages] == [1, 2]
    assert path.read_text(encoding="utf-8") == "".join(whole)  # the torn end is gone
    assert room.post("a", "next")["id"] == 3
    assert [m["id"] for m in chat.ChatRoom(path, kept=5).messages] == [1, 2, 3]
