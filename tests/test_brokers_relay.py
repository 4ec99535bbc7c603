"""The relay broker: the relay's sequencing in isolation (one order, one
encoding, all or nothing), the wire messages, and workers' hubs on a real relay
socket keeping the broker contract."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest

import sse_fast.brokers.sequencing as sequencing_module
from sse_fast import EncodeError
from sse_fast.brokers.relay import (
    Relay,
    RelayBroker,
    pack_delivery,
    pack_publish,
    read_message,
    serve_relay,
    unpack_delivery,
)
from sse_fast.brokers.sequencing import make_frame, sequence
from sse_fast.hub import Hub, PublishError, PublishRequest, resume
from sse_fast.settings import Settings

from .asgi_harness import attach


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
    return {"type": "publish", "request": 7, "accepted_at": 0.0, "events": events}


def test_batch_is_sequenced_encoded_and_broadcast_in_order() -> None:
    async def main() -> None:
        relay = Relay()
        origin, other = Collect(), Collect()
        relay.workers = {origin, other}  # type: ignore[arg-type]
        first = relay.next_position
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
        assert [i.position for i in items] == [first, first + 1]
        assert [i.id for i in items] == [str(first), "mine"]
        assert items[1].frame == b'event: e\nid: mine\nretry: 5\ndata: {"k":1}\n\n'
        deliver, ack = await origin.messages()
        assert unpack_delivery(*deliver) == items
        assert ack[0] == {"type": "ack", "request": 7, "ids": [str(first), "mine"]}

    asyncio.run(main())


def test_an_unencodable_event_refuses_the_whole_batch() -> None:
    async def main() -> None:
        relay = Relay()
        origin, other = Collect(), Collect()
        relay.workers = {origin, other}  # type: ignore[arg-type]
        first = relay.next_position
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
        assert reply["type"] == "error" and reply["message"].startswith("event:")
        assert relay.next_position == first  # no sequence number used

    asyncio.run(main())


def test_workers_apply_deliveries_once() -> None:
    hub = Hub(Settings(), broker=RelayBroker("/nonexistent"))
    hub.fanout.last_position = 99  # as if the relay had welcomed it at 100
    items = sequence([PublishRequest(("t",), "x")], 100, 0.0)
    message = pack_delivery(items)
    head = orjson.loads(message[8 : 8 + int.from_bytes(message[4:8], "big")])
    hub.apply(unpack_delivery(head, message[8 + len(orjson.dumps(head)) :]))
    hub.apply(items)  # a replay is ignored
    assert hub.metrics.published_total == 1 and hub.last_position == 100


def test_ids_keep_growing_across_a_restart(monkeypatch: Any) -> None:
    monkeypatch.setattr(sequencing_module.time, "time_ns", lambda: 1_000_000_000_000)
    earlier = Hub(Settings())
    old_ids = earlier.publish_nowait([PublishRequest(("t",), i) for i in range(3)])
    monkeypatch.setattr(
        sequencing_module.time, "time_ns", lambda: 1_000_000_500_000
    )  # 0.5 ms later
    later = Hub(Settings())
    (new_id,) = later.publish_nowait([PublishRequest(("t",), "x")])
    assert int(new_id) > max(int(i) for i in old_ids)
    topic = later.topics.by_name["t"]
    status, _ = resume.resolve(
        [topic], old_ids[-1], later.broker.first_position, later.last_position
    )
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
            pack_publish(1, [PublishRequest(("t",), "fine"), PublishRequest(("t",), bad)], 0.0)
        assert str(info.value) == reason(bad)
        assert info.value.status == 400
    # nesting that one worker accepts is not made deeper by the relay message
    ok = orjson.loads("[" * 254 + "]" * 254)
    assert pack_publish(1, [PublishRequest(("t",), ok), PublishRequest(("t",), b"bytes")], 0.0)


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def _stop(relay: asyncio.Task[None], *hubs: Hub) -> None:
    for hub in hubs:
        await hub.stop()
    relay.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relay


async def _relay(path: str) -> asyncio.Task[None]:
    ready = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serve_relay(path, ready))
    await asyncio.wait_for(ready.wait(), 5)
    return task


def test_workers_on_one_relay_hold_the_same_events_in_one_order(tmp_path: Any) -> None:
    async def main() -> None:
        relay = await _relay(str(tmp_path / "relay.sock"))
        hubs = [Hub(Settings(), broker=RelayBroker(str(tmp_path / "relay.sock"))) for _ in "ab"]
        for hub in hubs:
            await hub.start()
        try:
            ids = []
            for n in range(10):
                ids += await hubs[n % 2].publish([PublishRequest(("t",), n)])
            await _until(lambda: all(h.last_position == int(ids[-1]) for h in hubs))
            for hub in hubs:
                topic = hub.topics.by_name["t"]
                assert [topic.position_at(c) for c in range(1, 11)] == [int(i) for i in ids]
                assert hub.last_position == int(ids[-1])
                assert hub.stats()["relay"] == {"connected": True, "pending": 0}
            with pytest.raises(RuntimeError, match="local broker"):
                hubs[0].publish_nowait([PublishRequest(("t",), "sync")])
        finally:
            await _stop(relay, *hubs)

    asyncio.run(main())


def test_a_worker_joining_late_claims_no_history_it_never_had(tmp_path: Any) -> None:
    """The broker contract's "History claims": a member that joins a running
    sequence says ``unknown`` for ids from before it joined, never ``resumed``."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        relay = await _relay(path)
        early = Hub(Settings(), broker=RelayBroker(path))
        await early.start()
        late = Hub(Settings(), broker=RelayBroker(path))
        try:
            ids = await early.publish([PublishRequest(("t",), n) for n in range(5)])
            await late.start()  # e.g. a worker respawned after a crash
            assert late.broker.first_position == int(ids[-1]) + 1
            for last_event_id in (ids[0], ids[2]):
                assert (await attach(early, ["t"], last_event_id)).resume == "resumed"
                assert (await attach(late, ["t"], last_event_id)).resume == "unknown"
            # the newest id is where the late worker starts: nothing after it is missing
            assert (await attach(late, ["t"], ids[-1])).resume == "resumed"
            (after,) = await early.publish([PublishRequest(("t",), "after")])
            await _until(lambda: late.last_position == int(after))
            assert (await attach(late, ["t"], ids[-1])).resume == "resumed"
        finally:
            await _stop(relay, early, late)

    asyncio.run(main())


def test_without_the_relay_publishes_are_refused_with_retry_after(tmp_path: Any) -> None:
    async def main() -> None:
        hub = Hub(Settings(), broker=RelayBroker(str(tmp_path / "none.sock")))
        assert not hub.broker.available
        with pytest.raises(PublishError) as info:
            await hub.publish([PublishRequest(("t",), 1)])
        assert info.value.status == 503 and info.value.retry_after == 1.0
        assert hub.metrics.published_total == 0

    asyncio.run(main())
