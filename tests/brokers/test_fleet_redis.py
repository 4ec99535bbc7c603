"""Several ``sse-fast serve --redis-url`` nodes on one real ``redis-server``
behave as one server: the same ids everywhere, resumes on any node, one scrape
per node for all its workers, and Redis faults said honestly. Real processes: nodes on a
real redis-server and Sentinel failovers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from sse_fast._core import ParsedEvent
from sse_fast.testing import (
    HOST,
    RedisSentinel,
    RedisServer,
    ServerProcess,
    SSEClient,
    collect,
    wait_for,
)

from ..support.come_back import served

if shutil.which("redis-server") is None:  # .ci/run installs it
    raise RuntimeError("these tests need redis-server: apt-get install redis-server")


pytestmark = pytest.mark.processes("nodes on a real redis-server and Sentinel failovers")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _body(topic: str, data: object) -> bytes:
    return json.dumps({"topic": topic, "data": data}).encode()


def test_nodes_share_ids_and_a_client_resumes_on_another_node(
    redis_server: RedisServer,
) -> None:
    a = ServerProcess("--redis-url", redis_server.url, "--redis-probe-interval", "1")
    b = ServerProcess(
        "--redis-url", redis_server.url, "--workers", "2", "--redis-probe-interval", "1"
    )
    with a, b:

        async def main() -> None:
            with contextlib.ExitStack() as clients:  # closed whatever fails
                await run(clients)

        async def run(clients: contextlib.ExitStack) -> None:
            on_a = clients.enter_context(contextlib.closing(a.client("news")))
            on_b = clients.enter_context(contextlib.closing(b.client("news")))
            await on_a.connect()
            await on_b.connect()
            ids = []
            for n in range(5):
                status, _, body = await (a if n % 2 else b).publish(_body("news", n))
                assert status == 200, body
                ids += json.loads(body)["ids"]
            got_a = [e.id for e in await collect(on_a, 5)]
            got_b = [e.id for e in await collect(on_b, 5)]
            assert got_a == got_b == ids
            # node A goes away for good (kill -9 of all its processes); its client
            # resumes on B with what it missed
            assert a.proc is not None
            os.killpg(a.proc.pid, signal.SIGKILL)
            a.stop()
            on_a.close()
            for n in range(5, 8):
                status, _, body = await b.publish(_body("news", n))
                ids += json.loads(body)["ids"]
            moved = clients.enter_context(
                contextlib.closing(b.client("news", last_event_id=got_a[-1]))
            )
            await moved.connect()
            assert moved.response_headers["sse-fast-resume"] == "resumed"
            assert [e.id for e in await collect(moved, 3)] == ids[5:]
            # one scrape of B answers for both its workers (gathered through Redis)
            status, _, text = await b.get("/metrics")
            assert status == 200
            assert re.search(rb"^sse_fast_workers_reporting 2$", text, re.MULTILINE), text
            assert re.search(rb"^sse_fast_connections_open 2$", text, re.MULTILINE), text
            stats = json.loads((await b.get("/stats"))[2])
            assert stats["workers_reporting"] == 2 and stats["connections"] == 2
            assert {w["redis"]["node"] for w in stats["workers"]} == {
                stats["workers"][0]["redis"]["node"]
            }

        asyncio.run(main())


def test_redis_lost_and_back_is_said_and_streams_stay_open(redis_server: RedisServer) -> None:
    with ServerProcess("--redis-url", redis_server.url, "--redis-probe-interval", "0.5") as server:

        async def main() -> None:
            with contextlib.closing(server.client("ops")) as client:  # whatever fails
                await run(client)

        async def run(client: SSEClient) -> None:
            await client.connect()
            status, _, _ = await server.publish(_body("ops", "before"))
            assert status == 200
            assert [e.data for e in await collect(client, 1)] == ["before"]
            redis_server.kill()
            status, headers, body = await server.publish(_body("ops", "refused"))
            assert status == 503 and headers["retry-after"] == "1", body

            async def not_ready() -> bool:
                return (await server.get("/readyz"))[0] == 503

            await wait_for(not_ready, timeout=10)
            assert (await server.get("/healthz"))[0] == 200  # within broker_down_limit
            redis_server.start()

            async def ready() -> bool:
                return (await server.get("/readyz"))[0] == 200

            await wait_for(ready, timeout=15)
            status, _, body = await server.publish(_body("ops", "after"))
            assert status == 200, body
            missed, after = await collect(client, 2)
            assert missed.event == "sse-fast-missed"
            assert json.loads(missed.data)["reason"] == "redis-restarted"
            assert after.data == "after"

        asyncio.run(main())
        assert "Redis subscription lost" in server.output()


class Publisher:
    """Publishes ``n = 0, 1, ...`` on ``topic`` (or ``topic(n)``) through the nodes in turn and
    sorts the answers: acknowledged (with its id), refused (not published) and
    maybe (the answer was lost, or no replica confirmed it)."""

    def __init__(self, nodes: list[ServerProcess], topic: str | Callable[[int], str]) -> None:
        self.nodes = nodes
        self.topic: Callable[[int], str] = topic if callable(topic) else lambda _: topic
        self.acked: dict[int, str] = {}
        self.refused: list[int] = []
        self.maybe: list[int] = []
        self.retry_after: set[str] = set()
        self.slowest_refusal = 0.0
        #: what the last refused publish was answered (status and body), for a failure to say
        self.last_refusal: tuple[int, bytes] | None = None
        self.n = 0

    async def once(self) -> None:
        n, self.n = self.n, self.n + 1
        node = self.nodes[n % len(self.nodes)]
        started = time.monotonic()
        status, headers, body = await node.publish(_body(self.topic(n), n))
        if status == 200:
            (self.acked[n],) = json.loads(body)["ids"]
            return
        self.last_refusal = (status, body)
        assert status == 503, body
        self.retry_after.add(headers.get("retry-after", ""))
        self.slowest_refusal = max(self.slowest_refusal, time.monotonic() - started)
        if b"may or may not" in body or b"replicas confirmed" in body:
            self.maybe.append(n)
        else:
            self.refused.append(n)

    @contextlib.asynccontextmanager
    async def _saying_refusals(self) -> AsyncIterator[None]:
        """A ``TimeoutError`` within says what the nodes answered the last refused publish."""
        try:
            yield
        except TimeoutError as exc:
            if self.last_refusal is None:
                raise
            status, body = self.last_refusal
            said = body.decode(errors="replace")
            raise TimeoutError(f"{exc}; the last refusal: {status} {said}") from exc

    async def run(self, stop: asyncio.Event, interval: float = 0.02) -> None:
        while not stop.is_set():
            await self.once()
            await asyncio.sleep(interval)  # pace: the load, about 50 publishes a second

    async def under_way(self, streams: list[list[ParsedEvent]], count: int = 20) -> None:
        """Wait until ``count`` publishes are acknowledged and every stream got events."""

        def going() -> bool:
            return len(self.acked) >= count and all(streams)

        await wait_for(going, timeout=15, what=f"{count} publishes acknowledged and delivered")

    async def more(self, count: int = 20) -> None:
        """Wait until ``count`` more publishes are acknowledged (publishing is back)."""
        acked = len(self.acked)
        async with self._saying_refusals():
            await wait_for(
                lambda: len(self.acked) >= acked + count,
                timeout=30,
                what=f"{count} more publishes acknowledged",
            )

    async def last(self, streams: list[list[ParsedEvent]]) -> None:
        """Once the load stopped: one more publish, acknowledged, and every stream's events up
        to it. Each stream is in the order of positions, so anything published before it (an
        event late, or twice, or refused and delivered all the same) came before it."""

        async def acknowledged() -> bool:
            await self.once()
            return self.n - 1 in self.acked

        async with self._saying_refusals():
            await wait_for(
                acknowledged, timeout=15, interval=0.05, what="a last publish acknowledged"
            )
        last = self.n - 1

        def arrived() -> bool:
            return all(_has(stream, last) for stream in streams)

        try:
            await wait_for(arrived, timeout=15, what="the last publish in every stream")
        except TimeoutError as exc:  # which stream, and since when (a race to find)
            raise TimeoutError(f"{exc}: {self.lacking(streams, last)}") from None

    def lacking(self, streams: list[list[ParsedEvent]], last: int) -> str:
        """The streams without ``last``, each with how many acknowledged events it lacks and
        the last it got (stuck since then, or lacking that one alone)."""
        said = []
        for index, stream in enumerate(streams):
            if _has(stream, last):
                continue
            got = {json.loads(e.data) for e in stream if e.event == "message"}
            absent = sorted(set(self.acked) - got)
            tail = [(e.id, e.event, e.data) for e in stream[-3:]]
            said.append(
                f"stream {index} lacks {len(absent)} of {len(self.acked)} acknowledged "
                f"(first {absent[:5]}), its last events {tail}"
            )
        return "; ".join(said)


def _has(stream: list[ParsedEvent], n: int) -> bool:
    return any(e.event == "message" and json.loads(e.data) == n for e in stream)


async def _read_all(client: SSEClient, into: list[ParsedEvent]) -> None:
    while not client.closed:
        into += await client.events()


@contextlib.asynccontextmanager
async def _feed_streams(
    a: ServerProcess, b: ServerProcess, topic: str = "feed"
) -> AsyncIterator[tuple[list[SSEClient], list[list[ParsedEvent]]]]:
    """Three streams of ``topic`` (one on ``a``, two on ``b``) read into lists as they
    come: the clients and their events. On the way out, however the block ended, the
    clients are closed and the tasks reading them cancelled and awaited (a failed test
    leaves no socket for the next one's garbage collection to find)."""
    clients = [a.client(topic), b.client(topic), b.client(topic)]
    streams: list[list[ParsedEvent]] = [[] for _ in clients]
    readers: list[asyncio.Task[None]] = []
    try:
        for client in clients:
            await client.connect()
        readers += (
            asyncio.create_task(_read_all(c, s)) for c, s in zip(clients, streams, strict=True)
        )
        yield clients, streams
    finally:
        for client in clients:
            client.close()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def _loading(publisher: Publisher) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """``publisher.run`` in a task for the block; what it gives stops the load and awaits
    it (its failure raised). A block that ends otherwise cancels and awaits it."""
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))

    async def stopped() -> None:
        stop.set()
        await task

    try:
        yield stopped
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _check_delivery(publisher: Publisher, events: list[ParsedEvent], *, breaks: bool) -> None:
    """Every acknowledged event once (or a missed signal, where ``breaks`` may
    happen), no refused one, no event twice."""
    data = [json.loads(e.data) for e in events if e.event == "message"]
    ids = [e.id for e in events if e.event == "message"]
    assert len(set(ids)) == len(ids) and len(set(data)) == len(data), "duplicates"
    assert not set(data) & set(publisher.refused), "a refused publish was delivered"
    assert set(data) <= set(publisher.acked) | set(publisher.maybe)
    missed = [e for e in events if e.event == "sse-fast-missed"]
    if not breaks:
        assert not missed, missed
    absent = sorted(set(publisher.acked) - set(data))
    if absent:  # only with a missed signal after them
        assert missed, f"acknowledged and never delivered, nothing said: {absent}"
        last_break = max(int(e.id) for e in missed)
        assert all(int(publisher.acked[n]) < last_break for n in absent), absent
    for n in data:  # with the ids the publishers were given
        if n in publisher.acked:
            assert publisher.acked[n] in ids


def test_redis_stopped_for_ten_seconds_loses_nothing_acknowledged(
    redis_server: RedisServer,
) -> None:
    """A partition: Redis does not answer for 10 s while two nodes (one with two
    workers) publish 50 events/s and hold subscribers."""
    flags = ("--redis-url", redis_server.url, "--redis-probe-interval", "1")
    with ServerProcess(*flags) as a, ServerProcess(*flags, "--workers", "2") as b:

        async def main() -> None:
            publisher = Publisher([a, b], "feed")
            async with _feed_streams(a, b) as (clients, streams), _loading(publisher) as stop:
                await publisher.under_way(streams)
                redis_server.stop()
                stopped = time.monotonic()

                async def not_ready() -> bool:
                    return [(await node.get("/readyz"))[0] for node in (a, b)] == [503, 503]

                await wait_for(not_ready, timeout=8)
                assert (await a.get("/healthz"))[0] == 200  # within --broker-down-limit
                # pace: the partition under test lasts 10 s
                await asyncio.sleep(10 - (time.monotonic() - stopped))
                redis_server.cont()

                async def ready() -> bool:
                    return [(await node.get("/readyz"))[0] for node in (a, b)] == [200, 200]

                await wait_for(ready, timeout=15)
                await publisher.more()
                await stop()
                await publisher.last(streams)
                assert publisher.refused and publisher.retry_after == {"1"}
                assert publisher.slowest_refusal < 3  # fail fast, not after the partition
                for client, stream in zip(clients, streams, strict=True):
                    assert not client.closed  # stayed connected through it
                    _check_delivery(publisher, stream, breaks=False)

        asyncio.run(main())


#: Sentinel's failure detector (``down-after-milliseconds``), set never to fire: the one
#: failover is the one the test orders (``SENTINEL FAILOVER``) after killing the primary. At
#: 1 s, on a loaded machine, Sentinel took the new primary (slow to answer its fresh link) for
#: down and failed over again, to the last replica: that one had no replica of its own until
#: Sentinel made the demoted primary one (about 10 s later) and it had resynced in full, and
#: every publish waiting for a replica was refused meanwhile ("0 of 1 replicas confirmed").
SENTINEL_NEVER_DOWN_MS = 3_600_000


@pytest.mark.skipif(shutil.which("redis-sentinel") is None, reason="no redis-sentinel binary")
def test_a_sentinel_failover_keeps_every_acknowledged_event() -> None:
    """kill -9 of the Redis primary under load, then Sentinel's failover: it promotes a
    replica, the nodes follow it, and every acknowledged event reaches every subscriber
    once (publishes wait for the replica: --redis-wait-replicas 1)."""
    _sentinel_failover("feed", "feed")


def test_a_sentinel_failover_keeps_every_topic_born_for_pattern_streams() -> None:
    """The same failover with every event to a new topic (``job/<n>``, a birth each)
    and streams of ``job/*``: the births lost with the old primary's subscription are
    read again from the new one, and every acknowledged event reaches every stream
    once, in order."""
    _sentinel_failover("job/*", lambda n: f"job/{n}")


def _sentinel_failover(stream: str, topic: str | Callable[[int], str]) -> None:
    """Two nodes (one of two workers) on a Sentinel-managed primary with two replicas;
    streams of ``stream``, publishes to ``topic`` (``_failover``)."""
    with RedisServer() as primary:
        # two replicas: after the failover one is left for the new primary's WAIT
        replica = RedisServer(0, "--replicaof", HOST, str(primary.port))
        other = RedisServer(0, "--replicaof", HOST, str(primary.port))
        sentinel = RedisSentinel(primary, replicas=2, down_after_ms=SENTINEL_NEVER_DOWN_MS)
        with replica, other, sentinel:
            flags: tuple[str, ...] = ("--redis-url", sentinel.url, "--redis-wait-replicas", "1")
            flags += ("--redis-probe-interval", "1")
            with ServerProcess(*flags) as a, ServerProcess(*flags, "--workers", "2") as b:
                try:
                    asyncio.run(_failover(primary, [replica, other], sentinel, a, b, stream, topic))
                except (AssertionError, TimeoutError) as exc:  # what the nodes said
                    exc.add_note(_nodes_said({"a": a, "b": b}))
                    raise


def _nodes_said(nodes: dict[str, ServerProcess]) -> str:
    """Each node's workers' ``/stats`` Redis sections and the warnings and errors it logged
    (the last 20 lines), for a failure to show."""
    said = []
    for name, node in nodes.items():
        try:
            status, body = node._probe("/stats")
            workers = json.loads(body).get("workers", []) if status == 200 else body[:200]
            sections = [w.get("redis") for w in workers] if isinstance(workers, list) else workers
        except (OSError, ValueError) as exc:
            sections = [f"/stats: {exc!r}"]
        lines = [line for line in node.output().splitlines() if re.search(r"WARN|ERROR", line)]
        said.append(f"node {name}: {sections}\n" + "\n".join(lines[-20:]))
    return "\n".join(said)


async def _failover(
    primary: RedisServer,
    replicas: list[RedisServer],
    sentinel: RedisSentinel,
    a: ServerProcess,
    b: ServerProcess,
    stream: str = "feed",
    topic: str | Callable[[int], str] = "feed",
) -> None:
    publisher = Publisher([a, b], topic)
    async with _feed_streams(a, b, stream) as (clients, streams), _loading(publisher) as stop:
        await publisher.under_way(streams)
        primary.kill()
        # what Sentinel does once it gives the primary up, ordered: the test's one failover
        said = await asyncio.to_thread(sentinel.cli, "SENTINEL", "FAILOVER", sentinel.name)
        assert said.strip() == "OK", said

        async def promoted() -> RedisServer | None:
            port = await asyncio.to_thread(sentinel.primary_port)
            return next((r for r in replicas if r.port == port), None)

        new = await wait_for(promoted, timeout=20, interval=0.2, what="a replica promoted")

        async def replicated() -> bool:  # what a publish waiting for a replica (WAIT) needs
            info = await asyncio.to_thread(new.cli, "INFO", "replication")
            return "state=online" in info

        what = "the new primary with a replica in sync (INFO replication: state=online)"
        await wait_for(replicated, timeout=30, interval=0.2, what=what)
        await publisher.more()  # both nodes publish on the new primary
        await stop()
        await publisher.last(streams)
        assert publisher.refused or publisher.maybe  # the failover was felt
        assert publisher.retry_after == {"1"}
        # a client that lost its connection would have resumed; these stayed connected
        for client, events in zip(clients, streams, strict=True):
            assert not client.closed
            _check_delivery(publisher, events, breaks=False)
            positions = [int(e.id or 0) for e in events if e.event == "message"]
            assert positions == sorted(positions), "out of order"
    # a resume on either node with an id from before the failover gets the rest
    first = publisher.acked[min(publisher.acked)]
    with contextlib.closing(a.client(stream, last_event_id=first)) as moved:
        await moved.connect()
        assert moved.response_headers["sse-fast-resume"] == "resumed"
        later = sorted(n for n in publisher.acked if int(publisher.acked[n]) > int(first))
        got: set[int] = set()

        async def caught_up() -> bool:  # reading what comes until then
            if not set(later) <= got:
                with contextlib.suppress(asyncio.TimeoutError):
                    for event in await asyncio.wait_for(moved.events(), 1):
                        assert event.event == "message", event
                        assert json.loads(event.data) not in got, "twice"
                        got.add(json.loads(event.data))
            return set(later) <= got

        what = "every later event after the resume"
        await wait_for(caught_up, timeout=10, interval=0, what=what)


def test_redis_that_lost_its_data_is_known_to_nodes_started_afterwards(
    redis_server: RedisServer,
) -> None:
    """Redis (no persistence) killed and restarted under nodes A and B after 300
    events: the 50 published right after it came back (before any node has
    reconnected) and those published through the nodes afterwards reach every
    stream open on A and B, after one ``redis-restarted`` marker; a node C
    started afterwards answers a resume from before the loss with ``evicted``
    and ``sse-fast-missed``, as A and B do (never ``resumed`` with 200 events
    silently skipped), and one from after it with the rest."""
    flags = ("--redis-url", redis_server.url, "--redis-probe-interval", "1")
    with ServerProcess(*flags) as a, ServerProcess(*flags, "--workers", "2") as b:

        async def main() -> None:
            async with _feed_streams(a, b) as (_, streams):
                await _lost_data(redis_server, a, b, flags, streams)

        asyncio.run(main())


def _batch(topic: str, numbers: range) -> bytes:
    return json.dumps({"events": [{"topic": topic, "data": n} for n in numbers]}).encode()


async def _lost_data(
    redis_server: RedisServer,
    a: ServerProcess,
    b: ServerProcess,
    flags: tuple[str, ...],
    streams: list[list[ParsedEvent]],
) -> None:
    import redis.asyncio as aioredis

    from sse_fast.brokers.redis import publish

    def delivered(ids: list[str]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return all(set(ids) <= {e.id for e in stream} for stream in streams)

        return check

    before: list[str] = []
    for node, start in ((a, 0), (b, 100), (a, 200)):  # 300 events, through both nodes
        status, _, body = await node.publish(_batch("feed", range(start, start + 100)))
        assert status == 200, body
        before += json.loads(body)["ids"]
    await wait_for(delivered(before))

    await asyncio.to_thread(redis_server.kill)

    async def not_ready() -> bool:
        return (await a.get("/readyz"))[0] == 503 and (await b.get("/readyz"))[0] == 503

    await wait_for(not_ready, timeout=10)
    await asyncio.to_thread(redis_server.start)  # empty: no persistence
    # 50 events acknowledged right after Redis came back, before the nodes reconnect
    direct = aioredis.Redis(host=HOST, port=redis_server.port)
    try:
        after = [await publish(direct, "feed", 300 + n) for n in range(50)]
    finally:
        await direct.aclose()

    async def ready() -> bool:
        return (await a.get("/readyz"))[0] == 200 and (await b.get("/readyz"))[0] == 200

    await wait_for(ready, timeout=15)
    for node, start in ((a, 350), (b, 360)):  # and through the nodes once they are back
        # a ready answer is one worker's: b's other one may still refuse (503) until its
        # own probe finds Redis again, and a publisher retries that
        async def taken(node: ServerProcess = node, start: int = start) -> bytes | None:
            status, _, body = await node.publish(_batch("feed", range(start, start + 10)))
            assert status in (200, 503), body
            return body if status == 200 else None

        body = await wait_for(taken, timeout=15, interval=0.05, what="a publish taken (200)")
        after += json.loads(body)["ids"]
    with contextlib.suppress(TimeoutError):
        await wait_for(delivered(after), timeout=10)
    for name, stream in zip(("a", "b's first", "b's second"), streams, strict=True):
        # each: the 300, one marker, then every event Redis had
        ids = [e.id for e in stream if e.event == "message"]
        absent = [i for i in after if i not in ids]
        assert not absent, (
            f"the stream on {name}: {len(absent)} of {len(after)} acknowledged after the "
            f"restart absent; its last events: {stream[-3:]}"
        )
        assert ids == before + after
        missed = [e for e in stream if e.event == "sse-fast-missed"]
        assert [json.loads(e.data)["reason"] for e in missed] == ["redis-restarted"]
        order = [e.id for e in stream if e.event in ("message", "sse-fast-missed")]
        assert order.index(missed[0].id) == len(before)
        assert int(before[-1]) < int(missed[0].id) < int(after[0])

    with ServerProcess(*flags) as c:
        # (b's second worker may still tell a stream to come back until its own probe
        # finds Redis again: followed, as a browser does)
        for node in (c, a, b):  # C, started after the loss, knows it as A and B do
            lost = await served(functools.partial(node.client, "feed", last_event_id=before[99]))
            with contextlib.closing(lost) as resume:
                assert resume.response_headers["sse-fast-resume"] in ("evicted", "unknown")
                (first,) = await collect(resume, 1)
                assert first.event == "sse-fast-missed", first
                assert json.loads(first.data)["reason"] in ("evicted", "unknown")
        for node in (c, a, b):  # from after the loss: the rest, on any node
            kept = await served(functools.partial(node.client, "feed", last_event_id=after[9]))
            with contextlib.closing(kept) as resume:
                assert resume.response_headers["sse-fast-resume"] == "resumed"
                rest = await collect(resume, len(after) - 10)
                assert [e.id for e in rest] == after[10:]
