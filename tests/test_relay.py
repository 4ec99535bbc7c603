"""The relay's sequencing in isolation: one order, one encoding, all or nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from sse_fast import EncodeError
from sse_fast.hub import Hub, PublishError, PublishRequest, make_frame
from sse_fast.relay import Relay, pack_delivery, pack_publish, read_message, unpack_delivery
from sse_fast.settings import Settings


class Collect:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def messages(self) -> list[tuple[dict[str, Any], bytes]]:
        reader = asyncio.StreamReader()
        reader.feed_data(self.data)
        reader.feed_eof()
        out = []
        while not reader.at_eof():
            out.append(await read_message(reader))
        return out


def header(events: list[list[Any]]) -> dict[str, Any]:
    return {"t": "pub", "r": 7, "a": 0.0, "e": events}


def test_batch_is_sequenced_encoded_and_broadcast_in_order() -> None:
    async def main() -> None:
        relay = Relay()
        origin, other = Collect(), Collect()
        relay.workers = {origin, other}  # type: ignore[arg-type]
        first = relay.next_gseq
        relay.publish(
            origin,
            header(
                [
                    [["a"], "x", None, None, None],  # type: ignore[arg-type]
                    [["a", "b"], {"k": 1}, "e", "mine", 5],
                ]
            ),
        )
        (delivery,) = await other.messages()
        items = unpack_delivery(*delivery)
        assert [i.gseq for i in items] == [first, first + 1]
        assert [i.id for i in items] == [str(first), "mine"]
        assert items[1].frame == b'event: e\nid: mine\nretry: 5\ndata: {"k":1}\n\n'
        deliver, ack = await origin.messages()
        assert unpack_delivery(*deliver) == items
        assert ack[0] == {"t": "ack", "r": 7, "ids": [str(first), "mine"]}

    asyncio.run(main())


def test_an_unencodable_event_refuses_the_whole_batch() -> None:
    async def main() -> None:
        relay = Relay()
        origin, other = Collect(), Collect()
        relay.workers = {origin, other}  # type: ignore[arg-type]
        first = relay.next_gseq
        relay.publish(
            origin,
            header(
                [
                    [["a"], "ok", None, None, None],  # type: ignore[arg-type]
                    [["a"], "bad", "x\ny", None, None],
                ]
            ),
        )
        assert other.data == b""  # nothing broadcast
        ((reply, _),) = await origin.messages()
        assert reply["t"] == "err" and reply["m"].startswith("event:")
        assert relay.next_gseq == first  # no sequence number used

    asyncio.run(main())


def test_workers_apply_deliveries_once() -> None:
    hub = Hub(Settings())
    hub.use_remote_sequencer(lambda r: None, 100, 99)  # type: ignore[arg-type,return-value]
    from sse_fast.hub import sequence

    items = sequence([PublishRequest(("t",), "x")], 100, 0.0)
    message = pack_delivery(items)
    head = orjson.loads(message[8 : 8 + int.from_bytes(message[4:8], "big")])
    hub.apply(unpack_delivery(head, message[8 + len(orjson.dumps(head)) :]))
    hub.apply(items)  # a replay is ignored
    assert hub.metrics.published_total == 1 and hub.last_gseq == 100


def test_ids_keep_growing_across_a_restart(monkeypatch: Any) -> None:
    import sse_fast.hub as hub_module

    monkeypatch.setattr(hub_module.time, "time_ns", lambda: 1_000_000_000_000)
    earlier = Hub(Settings())
    old_ids = earlier.publish_nowait([PublishRequest(("t",), i) for i in range(3)])
    monkeypatch.setattr(hub_module.time, "time_ns", lambda: 1_000_000_500_000)  # 0.5 ms later
    later = Hub(Settings())
    (new_id,) = later.publish_nowait([PublishRequest(("t",), "x")])
    assert int(new_id) > max(int(i) for i in old_ids)
    topic = later.topics["t"]
    status, _ = later.resolve_resume([topic], old_ids[-1])
    assert status == "unknown"  # an id from the earlier run is recognisably too old


def test_publish_message_refuses_what_one_worker_refuses_with_the_same_reason() -> None:
    def reason(data: object) -> str:
        try:
            make_frame(PublishRequest(("t",), data), "0")
        except EncodeError as exc:
            return str(exc)
        raise AssertionError("expected an EncodeError")

    deep = orjson.loads("[" * 300 + "]" * 300)
    for bad in (deep, "lone \udc80 surrogate", b"\xff not utf-8", {1, 2}):
        with pytest.raises(PublishError) as info:
            pack_publish(1, [PublishRequest(("t",), "fine"), PublishRequest(("t",), bad)])
        assert str(info.value) == reason(bad)
        assert info.value.status == 400
    # nesting that one worker accepts is not made deeper by the relay message
    ok = orjson.loads("[" * 254 + "]" * 254)
    assert pack_publish(1, [PublishRequest(("t",), ok), PublishRequest(("t",), b"bytes")])
