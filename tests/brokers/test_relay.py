"""The relay broker: the relay's sequencing in isolation (one order, one
encoding, all or nothing), the wire messages, and workers' hubs on a real relay
socket keeping the broker contract."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import sse_fast.brokers._sequencing as sequencing_module
from sse_fast import EncodeError
from sse_fast.brokers._relay import (
    Relay,
    RelayBroker,
    pack,
    pack_delivery,
    pack_publish,
    read_message,
    serve_relay,
    unpack_delivery,
)
from sse_fast.brokers._relay.wire import Publish, parse
from sse_fast.brokers._sequencing import make_frame, sequence
from sse_fast.hub import Hub, PublishError, PublishRequest
from sse_fast.hub import _resume as resume
from sse_fast.settings import Settings
from sse_fast.testing import wait_for

from ..conftest import forgive
from ..support.asgi_harness import PyEmptyAwaitable, attach
from ..support.stores import counted_store


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


def header(events: list[list[Any]], request: int = 7) -> Publish:
    """A worker's publish message as the relay reads it off the wire."""
    return parse({"type": "publish", "request": request, "accepted_at": 0.0, "events": events})


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
        assert other.data == b""  # stored, delivered and answered at the end of the turn
        await asyncio.sleep(0)
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


def test_the_publishes_of_one_turn_are_one_write_one_delivery_and_an_ack_each(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store, appends = counted_store(tmp_path)
        relay = Relay(store=store)
        relay.restore()
        one, two, bad = Collect(), Collect(), Collect()
        relay.workers = {one, two}  # type: ignore[arg-type]
        first = relay.next_position
        relay.publish(one, header([[["a"], "1", None, None, None]], request=1))
        relay.publish(bad, header([[["a"], "x", "x\ny", None, None]], request=2))
        relay.publish(two, header([[["b"], "2", None, None, None]] * 2, request=3))
        await asyncio.sleep(0)
        assert appends == [3]
        ((refused, _),) = await bad.messages()  # its own error, at once; nothing of it used
        assert refused["type"] == "error" and refused["request"] == 2
        (delivery, ack_one) = await one.messages()
        items = unpack_delivery(*delivery)
        assert [i.position for i in items] == [first, first + 1, first + 2]
        assert ack_one[0] == {"type": "ack", "request": 1, "ids": [str(first)]}
        (delivery_two, ack_two) = await two.messages()
        assert unpack_delivery(*delivery_two) == items
        assert ack_two[0]["ids"] == [str(first + 1), str(first + 2)]
        assert relay.next_position == first + 3

        # a write that fails fails every publish of the turn; none is delivered
        one.data = two.data = b""
        good = store._fd
        store._fd = os.open("/dev/full", os.O_WRONLY)
        relay.publish(one, header([[["a"], "3", None, "r1", None]], request=4))
        relay.publish(two, header([[["b"], "4", None, None, None]], request=5))
        await asyncio.sleep(0)
        for worker, request in ((one, 4), (two, 5)):
            ((reply, _),) = await worker.messages()
            assert (reply["type"], reply["request"], reply["status"]) == ("error", request, 503)
            assert reply["reason"] == "storage"
        assert relay.next_position == first + 3 and appends == [3]
        os.close(store._fd)
        store._fd = good
        one.data = b""
        relay.publish(one, header([[["a"], "3", None, "r1", None]], request=6))
        await asyncio.sleep(0)
        _, ack = await one.messages()
        assert ack[0]["ids"] == ["r1"]  # the retry memory had forgotten it: published now
        store.close()

    asyncio.run(main())


def test_workers_apply_deliveries_once() -> None:
    hub = Hub(Settings(), broker=RelayBroker("/nonexistent"))
    hub.topics.skip_to(99)  # as if the relay had welcomed it at 100
    items = sequence([PublishRequest(("t",), "x")], 100, 0.0)
    message = pack_delivery(items)
    head = orjson.loads(message[8 : 8 + int.from_bytes(message[4:8], "big")])
    hub.apply(unpack_delivery(head, message[8 + len(orjson.dumps(head)) :]))
    hub.apply(items)  # a replay is ignored
    assert len(hub.topics.by_name["t"].ring) == 1 and hub.last_position == 100
    assert hub.metrics.published_total == 0  # counted by the worker that took the publish


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
            await wait_for(
                lambda: all(h.last_position == int(ids[-1]) for h in hubs),
                what="every worker at the last id",
            )
            for hub in hubs:
                topic = hub.topics.by_name["t"]
                assert [topic.position_at(c) for c in range(1, 11)] == [int(i) for i in ids]
                assert hub.last_position == int(ids[-1])
                assert hub.stats()["relay"]["connected"] and hub.stats()["relay"]["pending"] == 0
            with pytest.raises(RuntimeError, match="local broker"):
                hubs[0].publish_nowait([PublishRequest(("t",), "sync")])
        finally:
            await _stop(relay, *hubs)

    asyncio.run(main())


class Recording:
    """A stream attached straight to a hub that records what it is sent."""

    def __init__(self) -> None:
        self.body = b""

    def send(self, message: dict[str, Any]) -> Any:
        self.body += message.get("body", b"")
        return PyEmptyAwaitable()

    async def attach(self, hub: Hub, names: list[str], last_event_id: str | None = None) -> Any:
        loop = asyncio.get_running_loop()
        return await hub.attach(names, last_event_id, self.send, loop.create_future)

    def events(self) -> list[tuple[str | None, str | None, str]]:
        """(event, id, data) of each event frame received."""
        out = []
        for block in self.body.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
            if "data" in fields:
                out.append((fields.get("event"), fields.get("id"), fields["data"]))
        return out


async def _relay_in_process(path: str, **limits: int) -> tuple[Relay, asyncio.Server]:
    relay = Relay(**limits)
    server = await asyncio.start_unix_server(relay.handle, path=path)
    return relay, server


async def _stop_relay(relay: Relay, server: asyncio.Server) -> None:
    """Stop a relay as a crash would: its workers' connections end."""
    server.close()
    for writer in list(relay.workers):
        writer.transport.abort()
    await server.wait_closed()


def test_a_worker_starting_late_recovers_the_relays_log_before_it_serves(tmp_path: Any) -> None:
    """A respawned worker is replayed the relay's log during its start: it resumes
    ids from before it existed, with every event."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        relay = await _relay(path)
        early = Hub(Settings(), broker=RelayBroker(path))
        await early.start()
        late = Hub(Settings(), broker=RelayBroker(path))
        try:
            ids = await early.publish([PublishRequest(("t",), n) for n in range(5)])
            await late.start()  # e.g. a worker respawned after a crash
            assert late.broker.first_position == int(ids[0])
            assert late.last_position == int(ids[-1])  # applied before start returned
            stream = Recording()
            assert (await stream.attach(late, ["t"], ids[0])).resume == "resumed"
            assert stream.events() == [(None, i, str(n)) for n, i in enumerate(ids) if n]
            assert (await attach(late, ["t"], str(int(ids[0]) - 1))).resume == "resumed"
            assert (await attach(late, ["t"], str(int(ids[0]) - 2))).resume == "unknown"
        finally:
            await _stop(relay, early, late)

    asyncio.run(main())


def test_a_short_log_limits_what_a_late_worker_claims(tmp_path: Any) -> None:
    """The broker contract's "History claims": ids older than the log replayed are
    ``unknown``, never ``resumed`` without the events."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        relay, server = await _relay_in_process(path, history_frames=3)
        early = Hub(Settings(), broker=RelayBroker(path))
        await early.start()
        late = Hub(Settings(), broker=RelayBroker(path))
        try:
            ids = await early.publish([PublishRequest(("t",), n) for n in range(6)])
            assert [i.id for i in relay.log] == ids[3:]
            await late.start()
            assert late.broker.first_position == int(ids[3])
            for last_event_id in ids[:2]:
                assert (await attach(early, ["t"], last_event_id)).resume == "resumed"
                assert (await attach(late, ["t"], last_event_id)).resume == "unknown"
            stream = Recording()
            assert (await stream.attach(late, ["t"], ids[2])).resume == "resumed"
            assert [e[1] for e in stream.events()] == ids[3:]
        finally:
            for hub in (early, late):
                await hub.stop()
            await _stop_relay(relay, server)

    asyncio.run(main())


@contextlib.asynccontextmanager
async def _publisher_and_worker(path: str) -> AsyncIterator[tuple[Relay, Hub, Hub]]:
    """A relay in process on ``path`` and two started workers of it (a publisher and a
    worker whose fate the test decides); all stopped on the way out."""
    relay, server = await _relay_in_process(path)
    publisher = Hub(Settings(), broker=RelayBroker(path))
    worker = Hub(Settings(), broker=RelayBroker(path))
    try:
        await publisher.start()
        await worker.start()
        yield relay, publisher, worker
    finally:
        for hub in (publisher, worker):
            await hub.stop()
        await _stop_relay(relay, server)


def test_a_worker_that_loses_the_relay_is_replayed_what_it_missed(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The same relay, a dropped connection: the worker reconnects by itself and
    its open stream gets every event, in order, with no missed marker."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        async with _publisher_and_worker(path) as (relay, publisher, worker):
            stream = Recording()
            await stream.attach(worker, ["t"])
            ids = await publisher.publish([PublishRequest(("t",), 0)])
            await wait_for(
                lambda: worker.last_position == int(ids[-1]), what="the worker at the first id"
            )
            (connection,) = [w for w, slot in relay.workers.items() if slot == 1]
            connection.transport.abort()
            await wait_for(lambda: not worker.broker.available, what="the worker without its relay")
            with pytest.raises(PublishError) as info:
                await worker.publish([PublishRequest(("t",), "refused")])
            assert info.value.status == 503 and info.value.retry_after == 1.0
            assert worker.broker.unavailable_for > 0
            ids += await publisher.publish([PublishRequest(("t",), n) for n in range(1, 4)])
            await wait_for(lambda: worker.broker.available, what="the worker back on the relay")
            await wait_for(lambda: len(stream.events()) == 4, what="the four events")
            assert stream.events() == [(None, i, str(n)) for n, i in enumerate(ids)]
            assert worker.broker.stats()["relay"]["reconnects"] == 1
            assert worker.broker.stats()["relay"]["history_breaks"] == 0
            assert worker.broker.unavailable_for == 0
            resumed = Recording()
            assert (await resumed.attach(worker, ["t"], ids[0])).resume == "resumed"
            assert [e[1] for e in resumed.events()] == ids[1:]
            forgive(caplog, "lost the relay connection")

    asyncio.run(main())


def test_a_delivery_that_raises_reconnects_and_is_replayed(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery from the relay raises (a bug in applying it): said with its traceback,
    the worker drops the connection, reconnects and is replayed what it missed; its
    stream gets every event once, in order (the reading task ended: the worker delivered
    nothing more and refused every publish, and said nothing)."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        async with _publisher_and_worker(path) as (_, publisher, worker):
            stream = Recording()
            await stream.attach(worker, ["t"])
            deliver = worker.broker.deliver
            failures = 0

            def failing_once(items: Any) -> None:
                nonlocal failures
                if not failures:
                    failures += 1
                    raise RuntimeError("a bug in applying a delivery")
                deliver(items)

            worker.broker.deliver = failing_once  # type: ignore[method-assign]
            ids = await publisher.publish([PublishRequest(("t",), n) for n in range(3)])
            ids += await publisher.publish([PublishRequest(("t",), "after")])
            await wait_for(lambda: len(stream.events()) == 4, what="the four events")
            assert [e[1] for e in stream.events()] == ids and failures == 1
            assert worker.broker.stats()["relay"]["reconnects"] == 1
            assert await worker.publish([PublishRequest(("t",), "from the worker")])
            said = [r for r in caplog.records if "reading from the relay" in r.getMessage()]
            assert len(said) == 1 and said[0].exc_info is not None
            forgive(caplog, "reading from the relay")

    asyncio.run(main())


@pytest.mark.parametrize("restart", [True, False], ids=["relay-restarted", "log-too-short"])
def test_a_history_break_is_told_to_open_streams(
    tmp_path: Any, restart: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A new relay (or one whose log no longer reaches back): open streams stay
    open and get ``sse-fast-missed`` in place; ids from before are ``evicted``;
    the marker's id resumes."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        relay, server = await _relay_in_process(path, history_frames=2)
        publisher = Hub(Settings(), broker=RelayBroker(path))
        worker = Hub(Settings(), broker=RelayBroker(path))
        await publisher.start()
        await worker.start()
        stream, quiet = Recording(), Recording()
        try:
            await stream.attach(worker, ["t"])
            await quiet.attach(worker, ["other"])
            before = await publisher.publish([PublishRequest(("t",), "before")])
            await wait_for(
                lambda: worker.last_position == int(before[0]), what="the worker at the first id"
            )
            if restart:
                await publisher.stop()
                await _stop_relay(relay, server)
                relay, server = await _relay_in_process(path, history_frames=2)
                publisher = Hub(Settings(), broker=RelayBroker(path))
                await publisher.start()
            else:
                (connection,) = [w for w, slot in relay.workers.items() if slot == 1]
                connection.transport.abort()
                await wait_for(
                    lambda: not worker.broker.available, what="the worker without its relay"
                )
                await publisher.publish([PublishRequest(("t",), n) for n in range(3)])
            await wait_for(lambda: worker.broker.available, what="the worker back on a relay")
            after = await publisher.publish([PublishRequest(("t",), "after")])
            # the relay's log still holds what it can replay (none after a restart)
            replayed = [] if restart else ["1", "2"]
            await wait_for(
                lambda: len(stream.events()) == 3 + len(replayed), what="the marker, then the rest"
            )
            reason = "relay-restarted" if restart else "relay-log-too-short"
            (event, marker, data), *rest = stream.events()[1:]
            assert stream.events()[0] == (None, before[0], "before")
            assert event == "sse-fast-missed" and orjson.loads(data)["reason"] == reason
            assert [e[2] for e in rest] == [*replayed, "after"] and rest[-1][1] == after[0]
            # every open stream is told, whatever its topic
            assert [e[0] for e in quiet.events()] == ["sse-fast-missed"]
            assert worker.metrics.history_breaks_total == 1
            assert worker.broker.first_position == int(marker) + 1
            assert (await attach(worker, ["t"], before[0])).resume == "evicted"
            resumed = Recording()
            assert (await resumed.attach(worker, ["t"], marker)).resume == "resumed"
            assert [e[2] for e in resumed.events()] == [*replayed, "after"]
            forgive(caplog, "lost the relay connection")
        finally:
            for hub in (publisher, worker):
                await hub.stop()
            await _stop_relay(relay, server)

    asyncio.run(main())


def test_one_gather_answers_for_every_worker(tmp_path: Any) -> None:
    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        relay = await _relay(path)
        hubs = [Hub(Settings(), broker=RelayBroker(path)) for _ in "abc"]
        for hub in hubs:
            await hub.start()
        try:
            await attach(hubs[1], ["t"])
            await hubs[0].publish([PublishRequest(("t",), n) for n in range(3)])
            figures = await hubs[2].gather({"what": "metrics"})
            assert sorted(f["worker"] for f in figures) == [0, 1, 2]
            assert sum(f["connections_open"] for f in figures) == 1
            assert sum(f["metrics"]["published_total"] for f in figures) == 3
            await hubs[0].stop()
            figures = await hubs[2].gather({"what": "stats", "offset": 0, "limit": 10})
            assert sorted(f["worker"] for f in figures) == [1, 2]
            assert all(f["topics"]["t"]["published"] == 3 for f in figures)
            restarted = Hub(Settings(), broker=RelayBroker(path))
            await restarted.start()  # takes the free slot: labels stay stable
            assert restarted.broker.worker == 0
            await restarted.stop()
        finally:
            await _stop(relay, *hubs[1:])

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


def test_a_relay_that_stops_answering_is_dropped_and_publishes_fail_fast(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A hung relay keeps its socket open: no end of file ever comes. Pings find
    it; its pending publishes are answered 503 instead of waiting forever, and a
    relay that accepts but never welcomes keeps the worker unavailable."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        connections: list[asyncio.StreamWriter] = []
        welcomed = 0

        async def hung(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal welcomed
            connections.append(writer)
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await read_message(reader)  # hello
                if not welcomed:  # only the first: later ones wait forever
                    welcomed += 1
                    welcome = {
                        "type": "welcome",
                        "first_position": 1,
                        "last_position": 0,
                        "continued": False,
                        "history_from": 1,
                        "worker": 0,
                        "replay": 0,
                    }
                    writer.write(pack(welcome))
                while True:
                    await read_message(reader)  # pings and publishes: never answered

        server = await asyncio.start_unix_server(hung, path=path)
        worker = Hub(Settings(), broker=RelayBroker(path, keepalive=0.1))
        await worker.start()
        try:
            with pytest.raises(PublishError) as info:
                await asyncio.wait_for(worker.publish([PublishRequest(("t",), 1)]), 5)
            assert info.value.status == 503 and "may or may not" in str(info.value)
            await wait_for(lambda: len(connections) >= 2, what="a second try: a new connection")
            # no welcome on it: unavailable all along (the wait ends at once if it is not)
            await wait_for(
                lambda: worker.broker.available or worker.broker.unavailable_for >= 0.3,
                what="the worker unavailable for 0.3 s",
            )
            assert not worker.broker.available and worker.broker.unavailable_for >= 0.3
            forgive(caplog, "answered no ping", "lost the relay connection")
        finally:
            await worker.stop()
            server.close()
            for writer in connections:
                writer.close()
                with contextlib.suppress(Exception):  # closed before the loop ends
                    await writer.wait_closed()
            await server.wait_closed()

    asyncio.run(main())


def test_a_relay_that_hangs_up_in_the_handshake_is_retried_until_the_deadline(
    tmp_path: Any,
) -> None:
    """A relay still starting (or stopping) may accept and close before its welcome:
    the worker tries again, like a refused connection, and gives up at
    ``connect_timeout`` with a ConnectionError naming the relay."""

    async def main() -> None:
        path = str(tmp_path / "relay.sock")
        accepted = 0

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            await reader.read(65536)  # the hello: the close is then a clean end of stream
            writer.close()

        server = await asyncio.start_unix_server(hang_up, path)
        hub = Hub(Settings(), broker=RelayBroker(path, connect_timeout=0.5))
        try:
            with pytest.raises(ConnectionError, match="cannot reach the relay"):
                await hub.broker.start()
        finally:
            server.close()
            await server.wait_closed()
        assert accepted > 1

    asyncio.run(main())
