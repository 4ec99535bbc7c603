"""The chat example's room, in process (its page is tested in
tests/test_examples.py, in Chromium, whose driver runs an event loop of its own
in the test's thread: hence a module apart)."""

from __future__ import annotations

import asyncio

import pytest

from examples import chat


def test_a_chat_client_that_stops_reading_is_cut_and_resumes_without_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its queue full, the stream ends with nothing queued after what it got: the
    browser's Last-Event-ID is then the last message it received, and the resume
    brings every later one."""
    monkeypatch.setattr(chat, "QUEUE", 3)

    async def main() -> tuple[list[str], list[int]]:
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
