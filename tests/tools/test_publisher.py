"""sse_fast.publisher.Publisher against a real server: the three paths, errors
that say what was wrong, and retries that never duplicate an event. Real processes: a
real server, restarted under the Publisher."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from sse_fast.publisher import Publisher, PublishFailed
from sse_fast.testing import HOST, ServerProcess, collect, free_port, wait_for

pytestmark = [
    pytest.mark.processes("the Publisher against a real server that restarts and loses answers"),
    # one worker runs the module: its server started once, not at each of several
    # workers' visits (pytest ends a module-scoped fixture when a worker moves on)
    pytest.mark.xdist_group("publisher"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(heartbeat_interval=1) as server:
        yield server


def test_the_three_paths_deliver_in_order(server: ServerProcess) -> None:
    async def main() -> None:
        client = server.client("p/1", "p/2")
        await client.connect()
        async with Publisher(f"http://{HOST}:{server.port}", batch_size=3) as publisher:
            one = await publisher.publish("p/1", {"n": 0}, event="note")
            many = await publisher.publish_many(
                [{"topic": "p/2", "data": n} for n in range(1, 8)]  # three batches
            )
            async with publisher.stream() as stream:
                acks = [await stream.publish("p/1", n) for n in range(8, 12)]
                bad = await stream.send({"topic": "p/1"})
                acks.append(await stream.publish(["p/1", "p/2"], 12))
            assert stream.published == 5 and stream.failed == 1
            with pytest.raises(PublishFailed) as info:
                bad.result()
            assert info.value.status == 400 and "data is required" in str(info.value)
            ids = [one, *many, *[f.result()[0] for f in acks]]
            events = await collect(client, 13)
            assert [e.id for e in events] == ids
            assert [e.data for e in events] == ['{"n":0}', *map(str, range(1, 13))]
        client.close()

    asyncio.run(main())


def test_refusals_raise_at_once_with_the_servers_reason(server: ServerProcess) -> None:
    async def main() -> None:
        async with Publisher(f"http://{HOST}:{server.port}") as publisher:
            with pytest.raises(PublishFailed) as info:
                await publisher.publish("bad topic", 1)
            assert info.value.status == 400 and "characters outside" in str(info.value)
            assert not info.value.maybe_published
        with pytest.raises(ValueError, match="http:// or https://"):
            Publisher("ftp://x")

    asyncio.run(main())


class FlakyProxy:
    """Forwards to the server, but cuts the first ``cuts`` connections right
    after the server answered (the publisher never hears back)."""

    def __init__(self, target: int, cuts: int, only: bytes = b"", slow: float = 0.0) -> None:
        self.target = target
        self.cuts = cuts
        #: the first connection's requests reach the server this late (others overtake it)
        self.slow = slow
        self.connections = 0
        #: the connections whose both ways ended
        self.ended = 0
        #: cut only a connection whose request holds these bytes (e.g. a batch's)
        self.only = only
        self.port = free_port()

    async def start(self) -> FlakyProxy:
        self.server = await asyncio.start_server(self.handle, HOST, self.port)
        return self

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target)
        cut = False
        self.connections += 1
        slow = self.slow if self.connections == 1 else 0.0

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            nonlocal cut
            try:
                while data := await src.read(65536):
                    if up and self.cuts > 0 and self.only in data:
                        cut = True
                        self.cuts -= 1
                    if cut and not up:
                        writer.transport.abort()  # the answer never reaches the publisher
                        return
                    if up and slow:
                        await asyncio.sleep(slow)  # pace: the subject, a slow path
                    dst.write(data)
            except ConnectionError:
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(
                pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False)
            )
        finally:
            self.ended += 1

    async def wound_down(self) -> None:
        """Wait until every connection the proxy took ended both ways."""
        await wait_for(
            lambda: self.ended == self.connections, what="the proxy's connections winding down"
        )

    def close(self) -> None:
        self.server.close()


def test_a_lost_answer_is_retried_without_duplicates_when_events_have_ids(
    server: ServerProcess,
) -> None:
    async def main() -> None:
        client = server.client("r")
        await client.connect()
        proxy = await FlakyProxy(server.port, cuts=2).start()
        async with Publisher(f"http://{HOST}:{proxy.port}", backoff=0.05) as publisher:
            assert await publisher.publish("r", "once", id="evt-1") == "evt-1"
        # without an id a retry could publish twice: it says so instead
        proxy.cuts = 1
        async with Publisher(f"http://{HOST}:{proxy.port}", backoff=0.05) as publisher:
            with pytest.raises(PublishFailed) as info:
                await publisher.publish("r", "no id")
            assert info.value.maybe_published and "give events ids" in str(info.value)
            await publisher.publish("r", "after")
        await proxy.wound_down()
        events = await collect(client, 3)
        assert [e.data for e in events] == ["once", "no id", "after"]  # "once" once
        proxy.close()
        client.close()

    asyncio.run(main())


def test_an_unreachable_server_is_retried_then_reported() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind((HOST, port))  # bound, not listening: connections are refused

        async def main() -> None:
            async with Publisher(f"http://{HOST}:{port}", retries=2, backoff=0.01) as publisher:
                with pytest.raises(PublishFailed) as info:
                    await publisher.publish("t", 1)
                assert "could not reach the server" in str(info.value)
                assert not info.value.maybe_published

        asyncio.run(main())


def test_a_stream_keeps_at_most_max_in_flight_events_unacked(server: ServerProcess) -> None:
    async def main() -> None:
        async with Publisher(f"http://{HOST}:{server.port}") as publisher:
            async with publisher.stream(max_in_flight=3) as stream:
                acks = []
                for n in range(40):
                    acks.append(await stream.publish("flight", n))
                    assert len(stream._waiting) <= 3
            assert stream.published == 40
            assert all(len(a.result()) == 1 for a in acks)

    asyncio.run(main())


def test_over_the_rate_it_waits_as_told_and_publishes() -> None:
    with ServerProcess(publish_rate=2) as server:  # a burst of 4, then 2/s

        async def main() -> None:
            client = server.client("rate")
            await client.connect()
            async with Publisher(f"http://{HOST}:{server.port}") as publisher:
                started = asyncio.get_running_loop().time()
                for n in range(6):
                    await publisher.publish("rate", n)  # no id needed: a 429 published nothing
                took = asyncio.get_running_loop().time() - started
            events = await collect(client, 6)
            assert [e.data for e in events] == [str(n) for n in range(6)]
            assert took >= 0.9  # it waited for Retry-After instead of failing
            client.close()

        asyncio.run(main())


def test_a_stream_the_server_ends_early_fails_what_was_not_acked_as_maybe_published() -> None:
    import signal

    with ServerProcess(publish_rate=5, drain_timeout=1) as server:  # acks come slowly

        async def main() -> None:
            async with Publisher(f"http://{HOST}:{server.port}") as publisher:
                stream = publisher.stream()
                async with stream:
                    futures = [await stream.publish("early", n) for n in range(40)]
                    await wait_for(
                        lambda: any(f.done() for f in futures), what="the burst's first ack"
                    )
                    assert server.proc is not None
                    server.proc.send_signal(signal.SIGTERM)  # drain: the stream ends
                    await asyncio.wait(futures, timeout=10)
                acked = [f for f in futures if not f.exception()]
                failed = [f.exception() for f in futures if f.exception()]
                assert acked and failed  # the burst went through, the rest did not
                assert all(isinstance(e, PublishFailed) and e.maybe_published for e in failed)
                assert any(e.status == 503 for e in failed)

        asyncio.run(main())


def test_batches_are_split_to_fit_the_servers_body_limit() -> None:
    with ServerProcess(max_body_bytes=4096) as server:  # 100 such events: about 9 KB

        async def main() -> None:
            client = server.client("fit")
            await client.connect()
            url = f"http://{HOST}:{server.port}"
            async with Publisher(url, max_body_bytes=4096) as publisher:
                ids = await publisher.publish_many(
                    [{"topic": "fit", "data": {"n": n, "pad": "x" * 50}} for n in range(100)]
                )
            events = await collect(client, 100)
            assert [e.id for e in events] == ids and len(set(ids)) == 100
            client.close()
            # the server's limit below the publisher's: a clear failure, never a silent one
            async with Publisher(url) as publisher:
                with pytest.raises(PublishFailed) as info:
                    await publisher.publish_many(
                        [{"topic": "fit", "data": "x" * 1000} for _ in range(500)]
                    )
            assert info.value.status == 413 or "max_body_bytes" in str(info.value)

        asyncio.run(main())


def test_an_event_no_request_could_carry_is_refused_before_sending(server: ServerProcess) -> None:
    async def main() -> None:
        async with Publisher(f"http://{HOST}:{server.port}", max_body_bytes=200) as publisher:
            for call in (
                publisher.publish("big", "x" * 300),
                publisher.publish_many(
                    [{"topic": "big", "data": 1}, {"topic": "big", "data": "x" * 300}]
                ),
            ):
                with pytest.raises(PublishFailed) as info:
                    await call
                assert info.value.status == 413 and not info.value.maybe_published
                assert "nothing was sent" in str(info.value)
            async with publisher.stream() as stream:
                with pytest.raises(PublishFailed) as info:
                    await stream.publish("big", "x" * 300)
                assert info.value.status == 413
                small = await stream.publish("big", "fits")
            assert stream.published == 1 and small.result()

    asyncio.run(main())


def test_leaving_a_stream_waits_as_long_as_acks_keep_coming() -> None:
    # acks come at 10/s after a burst of 20 (the publish rate), 50 events: about 3 s, more than the
    # publisher's timeout, which bounds the wait between acks, not the whole wait
    with ServerProcess(publish_rate=10) as server:

        async def main() -> None:
            async with Publisher(f"http://{HOST}:{server.port}", timeout=1.5) as publisher:
                started = asyncio.get_running_loop().time()
                async with publisher.stream() as stream:
                    futures = [await stream.publish("slow", n) for n in range(50)]
                took = asyncio.get_running_loop().time() - started
            assert stream.published == 50 and all(f.result() for f in futures)
            assert took > 2.5  # the old fixed wait (timeout + 1 s) would have given up

        asyncio.run(main())


def test_concurrent_publishes_go_together_each_with_its_own_id_in_order(
    server: ServerProcess,
) -> None:
    """Many tasks calling ``publish`` at once: fewer requests than calls, every call its
    own id, each topic's events in the order of the calls; a call alone goes at once."""

    async def main() -> None:
        client = server.client("c/0", "c/1", "c/2")
        await client.connect()
        # the first connection's requests arrive late: a later request on another
        # connection would overtake them, but never with a topic of theirs
        proxy = await FlakyProxy(server.port, cuts=0, slow=0.05).start()
        async with Publisher(f"http://{HOST}:{proxy.port}", connections=4) as publisher:
            await publisher.publish("c/0", "alone")
            assert publisher.batches.figures() == {"requests": 1, "calls": 1, "in_flight_max": 1}
            calls = [publisher.publish(f"c/{n % 3}", n) for n in range(300)]
            ids = await asyncio.gather(*calls)
            figures = publisher.batches.figures()
        proxy.close()
        assert len(set(ids)) == 300
        assert figures["calls"] == 301 and figures["requests"] < 60, figures
        # several requests at the server at once (three topics: a call waits for its
        # topic's request in flight, so fewer than the four connections)
        assert figures["in_flight_max"] >= 2, figures
        events = await collect(client, 301)
        by_topic: dict[int, list[int]] = {}
        for event in events[1:]:
            by_topic.setdefault(int(event.data) % 3, []).append(int(event.data))
        for topic, seen in by_topic.items():  # the order of the calls, per topic
            assert seen == sorted(seen), topic
        assert sorted(e.id for e in events[1:]) == sorted(ids)
        client.close()

    asyncio.run(main())


def test_a_bad_event_among_concurrent_ones_fails_alone(server: ServerProcess) -> None:
    """The server refuses a batch whole; the publisher sends its calls again one by one:
    the bad one fails with the server's reason, the others are published once."""

    async def main() -> None:
        client = server.client("good")
        await client.connect()
        async with Publisher(f"http://{HOST}:{server.port}", connections=1) as publisher:
            first = asyncio.ensure_future(publisher.publish("good", "first"))
            await asyncio.sleep(0)  # in flight: the next ones queue together
            calls = [publisher.publish("good", n) for n in range(5)]
            calls.insert(2, publisher.publish("bad topic", "refused"))
            results = await asyncio.gather(first, *calls, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], PublishFailed)
        assert errors[0].status == 400 and "characters outside" in str(errors[0])
        events = await collect(client, 6)
        assert [e.data for e in events] == ["first", *map(str, range(5))]
        assert [e.id for e in events] == [r for r in results if isinstance(r, str)]
        client.close()

    asyncio.run(main())


def test_a_lost_answer_to_a_batch_is_retried_exactly_once_with_ids(server: ServerProcess) -> None:
    """The answer to a batch is lost: with ids every call is sent again and published once;
    a call without an id among them fails as maybe published, the others still succeed."""

    async def main() -> None:
        client = server.client("lost")
        await client.connect()
        proxy = await FlakyProxy(server.port, cuts=1, only=b'{"events":[').start()
        url = f"http://{HOST}:{proxy.port}"
        async with Publisher(url, backoff=0.05, connections=1) as publisher:
            warm = asyncio.ensure_future(publisher.publish("lost", "warm", id="w"))
            await asyncio.sleep(0)  # in flight: the next ones queue, then go together
            calls = [publisher.publish("lost", n, id=f"lost-{n}") for n in range(4)]
            calls.append(publisher.publish("lost", "no id"))
            results = await asyncio.gather(warm, *calls, return_exceptions=True)
        assert proxy.cuts == 0  # the batch's answer was cut
        assert results[:5] == ["w", *(f"lost-{n}" for n in range(4))]
        assert isinstance(results[5], PublishFailed) and results[5].maybe_published
        await proxy.wound_down()
        # the batch was published before its answer was cut: the calls with ids, sent
        # again, are known to the server (nothing twice); the one without is there once;
        # and nothing more: every request was answered (or cut after the server's answer)
        # before a marker published now, which comes next
        status, _, answer = await server.publish(b'{"topic": "lost", "data": "marker"}')
        assert status == 200, answer
        events = await collect(client, 7)
        assert [e.data for e in events] == ["warm", "0", "1", "2", "3", "no id", "marker"]
        proxy.close()
        client.close()

    asyncio.run(main())


def test_a_restart_mid_batch_loses_and_repeats_nothing_with_ids(tmp_path: Any) -> None:
    """64 tasks publish with ids while the server is stopped (SIGTERM) and started again
    on its data directory: every call ends with its id, and each event is in the
    history once."""
    port = free_port()
    names = [f"r-{n}" for n in range(400)]

    async def publishing(publisher: Publisher, restarted: asyncio.Event) -> list[Any]:
        queue = list(names)

        async def task() -> list[Any]:
            out = []
            while queue:
                name = queue.pop(0)
                out.append(await publisher.publish(f"restart/{int(name[2:]) % 5}", name, id=name))
                if len(queue) == 200:
                    restarted.set()
            return out

        return [x for part in await asyncio.gather(*(task() for _ in range(64))) for x in part]

    first = ServerProcess(port=port, data_dir=str(tmp_path))
    second = ServerProcess(port=port, data_dir=str(tmp_path))

    async def main() -> None:
        restarted = asyncio.Event()
        url = f"http://{HOST}:{port}"
        topics = [f"restart/{n}" for n in range(5)]
        before = first.client(*topics)  # reads until the restart cuts it
        await before.connect()
        seen: list[Any] = []

        async def read() -> None:
            while not before.closed:
                seen.extend(await before.events())

        reader = asyncio.ensure_future(read())
        async with Publisher(url, retries=20, backoff=0.1, timeout=5) as publisher:
            running = asyncio.ensure_future(publishing(publisher, restarted))
            await restarted.wait()
            assert first.proc is not None
            first.proc.send_signal(signal.SIGTERM)  # drained: publishes refused meanwhile
            await asyncio.to_thread(first.proc.wait)
            await asyncio.to_thread(second.__enter__)
            ids = await running
        assert sorted(ids) == sorted(names)
        await asyncio.wait_for(reader, 10)
        seen = [e for e in seen if e.event == "message"]
        after = second.client(*topics, last_event_id=seen[-1].id)  # the client comes back
        await after.connect()
        assert after.response_headers["sse-fast-resume"] == "resumed"
        rest = await collect(after, 400 - len(seen))
        data = [e.data for e in seen + rest]
        assert sorted(data) == sorted(names)  # every event once
        after.close()

    with first:
        try:
            asyncio.run(main())
        finally:
            second.__exit__(None, None, None)


def test_a_call_cancelled_before_it_was_sent_is_not_published(server: ServerProcess) -> None:
    async def main() -> None:
        client = server.client("cancel")
        await client.connect()
        async with Publisher(f"http://{HOST}:{server.port}", connections=1) as publisher:
            first = asyncio.ensure_future(publisher.publish("cancel", "first"))
            await asyncio.sleep(0)  # in flight: the next ones wait in the queue
            kept = asyncio.ensure_future(publisher.publish("cancel", "kept"))
            dropped = asyncio.ensure_future(publisher.publish("cancel", "dropped"))
            await asyncio.sleep(0)
            dropped.cancel()
            await asyncio.gather(first, kept)
        events = await collect(client, 2)
        assert [e.data for e in events] == ["first", "kept"]
        with pytest.raises(TimeoutError):
            await collect(client, 1, timeout=0.3)
        client.close()

    asyncio.run(main())


def test_leaving_sends_the_calls_still_queued(server: ServerProcess) -> None:
    """Calls queued behind a request in flight when the ``async with`` ends are sent
    before the publisher closes, and answered."""

    async def main() -> None:
        client = server.client("leave")
        await client.connect()
        async with Publisher(f"http://{HOST}:{server.port}", connections=1) as publisher:
            calls = [asyncio.ensure_future(publisher.publish("leave", n)) for n in range(5)]
            await asyncio.sleep(0)  # the first in flight, the others queued
            assert len(publisher.batches._queue) == 4
        assert all(call.done() and not call.exception() for call in calls)
        events = await collect(client, 5)
        assert [e.data for e in events] == ["0", "1", "2", "3", "4"]
        client.close()

    asyncio.run(main())
