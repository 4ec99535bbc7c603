"""A cursor (the id of a stream over several partitions, ``hub/_cursor.py``) comes back as
``Last-Event-ID`` however many partitions the stream covers: it is not held to
``max_last_event_id_length`` (256) but to what ``max_topics_per_connection`` topics can make;
a plain id is still held to 256, and a cursor past its own bound is refused with the reason."""

from __future__ import annotations

import pytest

from sse_fast.hub._cursor import format_cursor

from ..support.asgi_harness import Stream, make_app, run, settle


def opened(last_event_id: str, **settings: object) -> tuple[int | None, bytes]:
    async def main() -> tuple[int | None, bytes]:
        app = make_app(**settings)
        stream = Stream(app, query=[("topic", "news")], headers={"last-event-id": last_event_id})
        stream.start()
        await settle()
        stream.read()
        stream.disconnect()
        await stream.finished()
        return stream.status, bytes(stream.raw)

    return run(main())  # type: ignore[no-any-return]


def test_a_cursor_over_sixteen_partitions_is_read_not_refused() -> None:
    cursor = format_cursor({p * 7: 1764160000000000 + p * 10**12 for p in range(16)})
    assert len(cursor) > 256  # idle partitions: deltas of 13 digits
    status, body = opened(cursor)
    assert status == 200
    assert b"sse-fast-missed" in body and b'"unknown"' in body  # one partition here: unknown


def test_a_plain_id_is_still_held_to_its_limit() -> None:
    status, body = opened("x" * 257)
    assert status == 400 and b"longer than 256 characters" in body


@pytest.mark.parametrize("topics", [4, 16])
def test_a_cursor_past_what_the_topics_can_make_is_refused(topics: int) -> None:
    longest = max(256, 20 + 25 * topics)
    status, body = opened("~1" + "0" * (longest - 1), max_topics_per_connection=topics)
    assert status == 400 and f"longer than {longest} characters".encode() in body
    status, _ = opened("~1" + "0" * (longest - 2), max_topics_per_connection=topics)
    assert status == 200
