"""The relay's wire messages (``brokers/_relay/wire.py``): one table of (message, the
exact header on the wire), checked both ways: each message packs to its header, and
each header (whole stream, byte by byte, with trailing data) reads back as it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from sse_fast.brokers._relay import RelayBroker, wire
from sse_fast.brokers._sequencing import Sequenced
from sse_fast.hub import Hub
from sse_fast.publishing import PublishError, PublishRequest
from sse_fast.settings import Settings

ITEMS = [
    Sequenced(5, "5", ("a",), b"id: 5\ndata: x\n\n", 1.5),
    Sequenced(6, "mine", ("a", "b"), b"id: mine\ndata: yy\n\n", 2.0),
]

#: each message, and the header the wire carries for it (key order included)
TABLE: list[tuple[wire.Message, dict[str, Any]]] = [
    (wire.Hello(None, None), {"type": "hello", "sequence": None, "last_position": None}),
    (wire.Hello(10, 41), {"type": "hello", "sequence": 10, "last_position": 41}),
    (
        wire.Welcome(10, 50, False, 42, 1, 2, 999),
        {
            "type": "welcome",
            "first_position": 10,
            "last_position": 50,
            "continued": False,
            "history_from": 42,
            "worker": 1,
            "replay": 2,
            "pid": 999,
        },
    ),
    (
        wire.Publish(
            7, 1.25, [PublishRequest(("a",), "x"), PublishRequest(("b",), 1, "e", "i", 5)]
        ),
        {
            "type": "publish",
            "request": 7,
            "accepted_at": 1.25,
            "events": [[["a"], "x", None, None, None], [["b"], 1, "e", "i", 5]],
        },
    ),
    (
        wire.Deliver(ITEMS),
        {"type": "deliver", "events": [[5, "5", ["a"], 1.5, 15], [6, "mine", ["a", "b"], 2.0, 19]]},
    ),
    (wire.Ack(7, ["5", "mine"]), {"type": "ack", "request": 7, "ids": ["5", "mine"]}),
    (wire.Refused(7, "event: bad"), {"type": "error", "request": 7, "message": "event: bad"}),
    (
        wire.Refused(8, "disk full", 503, "storage"),
        {"type": "error", "request": 8, "message": "disk full", "status": 503, "reason": "storage"},
    ),
    (
        wire.Gather(3, {"kind": "stats"}),
        {"type": "gather", "request": 3, "query": {"kind": "stats"}},
    ),
    (
        wire.Report(4, {"kind": "stats"}),
        {"type": "report", "gather": 4, "query": {"kind": "stats"}},
    ),
    (wire.Figures(4, {"pid": 12}), {"type": "figures", "gather": 4, "figures": {"pid": 12}}),
    (
        wire.Gathered(3, [{"pid": 12, "worker": 0}]),
        {"type": "gathered", "request": 3, "figures": [{"pid": 12, "worker": 0}]},
    ),
    (wire.Ping(9), {"type": "ping", "request": 9}),
    (wire.Pong(9), {"type": "pong", "request": 9}),
]


def _read_all(data: bytes, *, byte_by_byte: bool = False) -> list[wire.Message]:
    async def main() -> list[wire.Message]:
        reader = asyncio.StreamReader()
        step = 1 if byte_by_byte else len(data)
        for start in range(0, len(data), step):
            reader.feed_data(data[start : start + step])
        reader.feed_eof()
        out = []
        while not reader.at_eof():
            out.append(await wire.receive(reader))
        return out

    return asyncio.run(main())


@pytest.mark.parametrize(("message", "header"), TABLE, ids=lambda v: type(v).__name__)
def test_a_message_packs_to_its_header_and_reads_back(
    message: wire.Message, header: dict[str, Any]
) -> None:
    assert not isinstance(message, wire.Unknown)
    data = message.pack()
    head = orjson.dumps(header)
    payload = b"".join(i.frame for i in message.items) if isinstance(message, wire.Deliver) else b""
    assert data == wire.pack(header, payload)  # the same bytes, key order included
    assert data[8 : 8 + len(head)] == head
    assert _read_all(data) == [message]
    assert _read_all(data, byte_by_byte=True) == [message]


def test_messages_read_one_after_another() -> None:
    data = b"".join(m.pack() for m, _ in TABLE if not isinstance(m, wire.Unknown))
    assert _read_all(data) == [message for message, _ in TABLE]


def test_fields_a_header_may_leave_out_and_types_not_known() -> None:
    """A welcome without ``pid`` (an older relay), a hello without positions, an error
    without ``status``: read with None. A ``type`` this version does not know: ``Unknown``."""
    welcome = {"type": "welcome", "first_position": 1, "last_position": 0, "continued": False}
    welcome |= {"history_from": 1, "worker": 0, "replay": 0}
    assert wire.parse(welcome) == wire.Welcome(1, 0, False, 1, 0, 0, None)
    assert wire.parse({"type": "hello"}) == wire.Hello(None, None)
    assert wire.parse({"type": "error", "request": 1, "message": "m"}) == wire.Refused(1, "m")
    assert wire.parse({"type": "shiny", "request": 1}) == wire.Unknown("shiny")
    with pytest.raises(KeyError):
        wire.parse({"type": "ack", "request": 1})  # no ids


def test_an_unencodable_publish_is_refused_when_packed() -> None:
    bad = wire.Publish(1, 0.0, [PublishRequest(("t",), "fine"), PublishRequest(("t",), {1, 2})])
    with pytest.raises(PublishError) as info:
        bad.pack()
    assert info.value.status == 400


def test_a_replay_of_something_other_than_deliveries_is_a_broken_connection(
    tmp_path: Path,
) -> None:
    """A welcome promises ``replay`` deliveries; a relay that sends another message in
    their place broke the handshake: the worker tries again, like a refused
    connection, and gives up at ``connect_timeout`` naming the relay."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        hellos = 0

        async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal hellos
            assert isinstance(await wire.receive(reader), wire.Hello)
            hellos += 1
            writer.write(wire.Welcome(100, 99, True, 100, 0, 1).pack() + wire.Pong(1).pack())
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(broken, path)
        hub = Hub(Settings(), broker=RelayBroker(path, connect_timeout=0.5))
        try:
            with pytest.raises(ConnectionError, match="cannot reach the relay"):
                await hub.broker.start()
        finally:
            server.close()
            await server.wait_closed()
        assert hellos > 1

    asyncio.run(main())
