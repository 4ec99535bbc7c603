"""Pattern subscriptions against real ``sse-fast serve`` processes: exactly the matching
topics' events (Hypothesis against the reference matcher), and resume over the topics
created while the client was away, after a reconnect, a ``kill -9`` restart on the
same data directory, and with four workers behind the relay: nothing lost, nothing
repeated, order kept; the same over two nodes on one Redis (a node killed and started
again included), on one Redis sequence and on partitions. Real processes: sse-fast serve
started as a user starts it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_fast._patterns import matches
from sse_fast.testing import RedisServer, ServerProcess, collect, free_port

SEGMENTS = ["a", "b", "ab"]
TAILS = ["/".join(parts) for depth in (1, 2) for parts in itertools.product(SEGMENTS, repeat=depth)]
EXAMPLES = itertools.count()


pytestmark = pytest.mark.processes("sse-fast serve's pattern settings as typed on its command line")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(max_pattern_wildcards="5") as running:
        yield running


async def _publish(server: ServerProcess, topics: list[str], data: str) -> str:
    body = json.dumps({"topics": topics, "data": data}).encode()
    status, _, reply = await server.publish(body)
    assert status == 200, reply
    return str(json.loads(reply)["ids"][0])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    patterns=st.lists(
        st.text(alphabet="ab/*?", min_size=1, max_size=4).filter(lambda p: "*" in p or "?" in p),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    before=st.lists(st.sampled_from(TAILS), max_size=6),
    after=st.lists(
        st.lists(st.sampled_from(TAILS), min_size=1, max_size=2, unique=True), max_size=12
    ),
)
def test_a_pattern_stream_gets_exactly_the_matching_topics_events(
    server: ServerProcess, patterns: list[str], before: list[str], after: list[list[str]]
) -> None:
    """Each example in a namespace of its own (``ex<N>/``): topics published to before
    the stream opens, then events to old and new topics (some to two at once); the
    stream gets exactly those whose topics a pattern matches, once each, in order."""
    space = f"ex{next(EXAMPLES)}/"
    full = [space + p for p in patterns]
    end = space + "end"

    async def main() -> None:
        for i, tail in enumerate(before):
            await _publish(server, [space + tail], f"before-{i}")
        client = server.client(*full, end)
        await client.connect()
        assert client.status == 200
        expected = []
        for i, tails in enumerate(after):
            topics = [space + t for t in tails]
            await _publish(server, topics, f"after-{i}")
            if any(matches(t, full) for t in topics):
                expected.append(f"after-{i}")
        await _publish(server, [end], "end")
        events = await _until(client, "end")
        client.close()
        assert [e.data for e in events] == [*expected, "end"]

    asyncio.run(main())


async def _until(client: Any, data: str, timeout: float = 10.0) -> list[Any]:
    """The events of ``client`` up to the one whose data is ``data``."""
    events: list[Any] = []
    while not any(e.data == data for e in events):
        events += await asyncio.wait_for(client.events(), timeout)
    return events


def test_resume_after_a_reconnect_and_a_kill_9_restart(tmp_path: Path) -> None:
    """``acct/7/*`` reads two events and leaves; events go to its topics, to one created
    while it is away, and to another account's; the server is killed (``kill -9``) and
    started again on the same data directory; one more topic is created. The client
    comes back with its last id: ``resumed``, exactly its account's events after it."""
    port = free_port()
    with ServerProcess(port=port, data_dir=str(tmp_path)) as server:

        async def first() -> str:
            client = server.client("acct/7/*")
            await client.connect()
            await _publish(server, ["acct/7/a"], "1")
            await _publish(server, ["acct/7/b"], "2")
            events = await collect(client, 2)
            assert [e.data for e in events] == ["1", "2"]
            client.close()
            await _publish(server, ["acct/7/c"], "3")  # created while it is away
            await _publish(server, ["acct/8/a"], "other")
            await _publish(server, ["acct/7/a", "acct/7/c"], "4")
            return str(events[-1].id)

        last = asyncio.run(first())
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
    with ServerProcess(port=port, data_dir=str(tmp_path)) as server:

        async def second() -> None:
            await _publish(server, ["acct/7/d"], "5")  # created after the restart
            client = server.client("acct/7/*", last_event_id=last)
            await client.connect()
            assert client.response_headers["sse-fast-resume"] == "resumed"
            events = await collect(client, 3)
            assert [e.data for e in events] == ["3", "4", "5"]
            await _publish(server, ["acct/7/e"], "6")
            assert [e.data for e in await collect(client, 1)] == ["6"]
            client.close()

        asyncio.run(second())


def test_resume_with_four_workers_lands_anywhere() -> None:
    """With four workers behind the relay, every worker holds every topic: eight
    clients resuming from one id, on whichever workers the kernel gives them, all get
    the same events, topics created while they were away included."""
    with ServerProcess("--workers", "4") as server:

        async def main() -> None:
            client = server.client("team/3/*")
            await client.connect()
            await _publish(server, ["team/3/x"], "1")
            (seen,) = await collect(client, 1)
            client.close()
            for n, topic in enumerate(["team/3/y", "team/4/x", "team/3/x", "team/3/z"]):
                await _publish(server, [topic], f"after-{n}")
            clients = [server.client("team/3/*", last_event_id=seen.id) for _ in range(8)]
            await asyncio.gather(*(c.connect() for c in clients))
            assert {c.response_headers["sse-fast-resume"] for c in clients} == {"resumed"}
            got = await asyncio.gather(*(collect(c, 3) for c in clients))
            for events in got:
                assert [e.data for e in events] == ["after-0", "after-2", "after-3"]
            status, _, body = await server.get("/stats?connections=1")
            assert status == 200, body
            workers = {c["worker"] for c in json.loads(body)["connection_list"]}
            assert len(workers) > 1, workers  # more than one worker resumed them
            for c in clients:
                c.close()

        asyncio.run(main())


@pytest.mark.parametrize("layout", [(), ("--redis-partitions", "8")], ids=["one", "partitions"])
def test_patterns_over_two_redis_nodes_resume_anywhere(layout: tuple[str, ...]) -> None:
    """Two nodes (two workers each) on one Redis, one sequence or 8 partitions: a pattern
    stream on node A gets the topics born on node B while it is open, in order; topics
    born while its client is away (one on each node) are found when it resumes on node
    B, and again on node A after node A was killed (``kill -9``) and started afresh:
    ``resumed``, exactly."""
    with RedisServer() as redis:
        url = f"redis://127.0.0.1:{redis.port}"
        port_a = free_port()
        with (
            ServerProcess("--workers", "2", *layout, port=port_a, redis_url=url) as a,
            ServerProcess("--workers", "2", *layout, redis_url=url) as b,
        ):

            async def first() -> str:
                await _publish(b, ["acct/7/a"], "1")  # exists before the stream
                client = a.client("acct/7/*")
                await client.connect()
                await _publish(b, ["acct/7/b"], "2")  # born on B while it is open
                await _publish(b, ["acct/8/b"], "other")
                await _publish(a, ["acct/7/a", "acct/7/b"], "3")
                events = await collect(client, 2)
                assert [e.data for e in events] == ["2", "3"]
                client.close()
                await _publish(b, ["acct/7/c"], "4")  # born while it is away
                await _publish(a, ["acct/7/d"], "5")
                await _publish(b, ["acct/8/c"], "other")
                resumed = b.client("acct/7/*", last_event_id=events[0].id)
                await resumed.connect()
                assert resumed.response_headers["sse-fast-resume"] == "resumed"
                assert [e.data for e in await collect(resumed, 3)] == ["3", "4", "5"]
                resumed.close()
                return str(events[0].id)

            last = asyncio.run(first())
            assert a.proc is not None
            os.killpg(a.proc.pid, signal.SIGKILL)
            a.proc.wait()
            with ServerProcess("--workers", "2", *layout, port=port_a, redis_url=url) as again:

                async def second() -> None:
                    await _publish(b, ["acct/7/e"], "6")  # born while A was down
                    client = again.client("acct/7/*", last_event_id=last)
                    await client.connect()
                    assert client.response_headers["sse-fast-resume"] == "resumed"
                    got = await collect(client, 4)
                    assert [e.data for e in got] == ["3", "4", "5", "6"]
                    await _publish(b, ["acct/7/f"], "7")
                    assert [e.data for e in await collect(client, 1)] == ["7"]
                    client.close()

                asyncio.run(second())
