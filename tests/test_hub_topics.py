"""Topics: subscribing costs no history and cannot exhaust what publishers need.

A topic gets its ring with its first event; until then it is a few hundred
bytes that vanish with its last subscriber, and only topics with history count
against ``max_topics``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc

import orjson
import pytest

from sse_fast.hub import Hub, PublishError, PublishRequest, resume
from sse_fast.settings import Settings
from sse_fast.testing import ServerProcess, wait_for

from .asgi_harness import attach


def test_a_subscribed_topic_without_history_costs_well_under_1_kb() -> None:
    async def main() -> float:
        hub = Hub(Settings())
        shared = [f"shared{i}" for i in range(16)]
        keep = [await attach(hub, shared)]
        tracemalloc.start()
        try:
            gc.collect()
            start = tracemalloc.get_traced_memory()[0]
            keep += [await attach(hub, shared) for _ in range(500)]  # existing topics
            gc.collect()
            middle = tracemalloc.get_traced_memory()[0]
            keep += [await attach(hub, [f"t{j}-{i}" for i in range(16)]) for j in range(500)]
            gc.collect()
            end = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(hub.topics) == 16 + 500 * 16
        assert hub.topics.with_history == 0
        # what 8,000 new topics cost beyond subscribing to existing ones
        return ((end - middle) - (middle - start)) / (500 * 16)

    per_topic = asyncio.run(main())
    assert per_topic < 800, f"{per_topic:.0f} bytes per subscribed topic without history"


def test_topics_without_history_vanish_with_their_last_subscriber() -> None:
    async def main() -> None:
        hub = Hub(Settings())
        a = await attach(hub, ["empty", "busy"])
        b = await attach(hub, ["empty"])
        hub.publish_nowait([PublishRequest(("busy",), "kept")])
        hub.detach(a)
        assert set(hub.topics.by_name) == {"empty", "busy"}  # b still reads "empty"
        hub.detach(b)
        assert set(hub.topics.by_name) == {"busy"}  # history stays (resume), until topic_ttl
        assert hub.topics.with_history == 1

    asyncio.run(main())


def test_a_swept_topics_position_survives_a_passing_subscriber() -> None:
    async def main() -> None:
        now = [1000.0]
        hub = Hub(Settings(topic_ttl=10), clock=lambda: now[0])
        (first,) = hub.publish_nowait([PublishRequest(("gone",), 1)])
        now[0] += 11
        assert hub.sweep() == 1 and hub.topics.with_history == 0
        hub.detach(await attach(hub, ["gone"]))  # comes and goes: nothing kept...
        assert "gone" not in hub.topics.by_name
        topic = hub.topics.get("gone", now[0])  # ...but how far the topic went is
        status, _ = resume.resolve(
            [topic], str(int(first) - 1), hub.broker.first_position, hub.last_position
        )
        assert status == "evicted"

    asyncio.run(main())


def test_only_topics_with_history_count_against_max_topics() -> None:
    async def main() -> None:
        hub = Hub(Settings(max_topics=3))
        keep = [await attach(hub, [f"sub{j}-{i}" for i in range(16)]) for j in range(10)]
        assert len(hub.topics) == 160
        hub.publish_nowait([PublishRequest(("p1", "sub0-0"), 1)])  # a subscribed name too
        hub.publish_nowait([PublishRequest(("p2",), 2)])
        with pytest.raises(PublishError) as info:
            hub.publish_nowait([PublishRequest(("p3", "p4"), 3)])
        assert info.value.status == 503 and "3 topics with history" in str(info.value)
        assert hub.topics.with_history == 3
        assert keep

    asyncio.run(main())


def test_subscribers_cannot_use_up_max_topics_on_a_real_server() -> None:
    """The reviewer's case: --max-topics 2000, 250 subscriptions of 16 new names."""
    with ServerProcess(max_topics=2000) as server:

        async def main() -> None:
            clients = [server.client(*[f"s{j}-{i}" for i in range(16)]) for j in range(250)]
            for client in clients:
                await client.connect()
            stats = json.loads((await server.get("/stats?limit=1"))[2])
            assert stats["topics_total"] == 4000
            for i in range(50):  # publishers still get their topics
                status, _, body = await server.publish(
                    orjson.dumps({"topic": f"news{i}", "data": i})
                )
                assert status == 200, body
            for client in clients:
                client.close()

            async def only_published_topics_left() -> bool:
                stats = json.loads((await server.get("/stats?limit=1"))[2])
                return bool(stats["topics_total"] == 50)

            await wait_for(only_published_topics_left)

        asyncio.run(main())
