"""Topics: subscribing costs no history and cannot exhaust what publishers need.

A topic gets its ring with its first event; until then it is a few hundred
bytes that vanish with its last subscriber, and only topics with history count
against ``max_topics``.

Real processes: one check of ``max_topics`` from outside, 250 subscribers' sockets
against a real server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc

import orjson
import pytest

from sse_fast.hub import Hub, PublishError, PublishRequest
from sse_fast.hub import _resume as resume
from sse_fast.hub._topics import FRAME_OVERHEAD
from sse_fast.settings import Settings
from sse_fast.testing import ServerProcess, wait_for

from ..support.asgi_harness import Stream, attach, make_app, publish, run, settle


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


@pytest.mark.processes("max_topics against 250 subscribers' sockets on a real server")
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


# ---------------------------------------------------------------- the history budget

KB = 1024


def _budget_hub(budget: int, **settings: object) -> Hub:
    return Hub(Settings(max_history_bytes=budget, ring_max_bytes=64 * KB, **settings))  # type: ignore[arg-type]


def test_the_history_budget_evicts_what_was_written_longest_ago() -> None:
    async def main() -> None:
        hub = _budget_hub(100 * KB)
        topics = hub.topics
        ids = {}
        for name in ("a", "b", "c", "d"):
            ids[name] = [hub.publish_nowait([PublishRequest((name,), "x" * 10_000)])[0]]
            ids[name] += hub.publish_nowait([PublishRequest((name,), "y" * 10_000)])
            await asyncio.sleep(0)  # flushed (to no one), as between two requests
        # eight frames of ~10 KB: 80 KB and their overhead, within 100 KB
        assert topics.budget_evicted == 0
        hub.publish_nowait([PublishRequest(("e",), "z" * 45_000)])  # 25 KB past it
        figures = topics.budget_figures()
        assert figures["history_bytes"] <= figures["history_budget_bytes"] == 100 * KB
        assert figures["history_budget_evicted"] == topics.budget_evicted == 3
        # "a" was written to longest ago: both its frames went, and with no subscriber the
        # topic with them (how far it went is remembered); then the older frame of "b"
        assert "a" not in topics.by_name and len(topics.by_name["b"].ring) == 1
        assert [len(topics.by_name[n].ring) for n in "cde"] == [2, 2, 1]
        for name, last_event_id, outcome in (
            ("a", ids["a"][0], "evicted"),  # what followed it is gone
            ("a", ids["a"][1], "resumed"),  # nothing followed it
            ("b", ids["a"][1], "evicted"),  # b's first frame followed it, and is gone
            ("b", ids["b"][0], "resumed"),
            ("c", ids["b"][1], "resumed"),
        ):
            topic = topics.get(name, hub.clock())
            status, _ = resume.resolve(
                [topic], last_event_id, hub.broker.first_position, hub.last_position
            )
            assert status == outcome, (name, last_event_id)
        # the accounting follows the sweep too: nothing retained, nothing counted
        for topic in list(topics.by_name.values()):
            topics.drop(topic)
        assert topics.retained_bytes == topics.retained_frames == 0

    asyncio.run(main())


def test_the_history_budget_never_evicts_the_newest_frame_of_a_topic_being_written() -> None:
    async def main() -> None:
        hub = _budget_hub(64 * KB)
        for i in range(20):  # one topic: its own ring and the budget both trim it
            hub.publish_nowait([PublishRequest(("only",), str(i) * 10_000)])
            await asyncio.sleep(0)
        ring = hub.topics.by_name["only"].ring
        assert 1 <= len(ring) <= 6 and ring.head == 20
        # several new topics in one batch: each keeps its frame until it is flushed
        batch = [PublishRequest((f"n{i}",), "x" * 20_000) for i in range(6)]
        hub.publish_nowait(batch)
        assert all(len(hub.topics.by_name[f"n{i}"].ring) == 1 for i in range(6))
        hub.fanout.flush()
        hub.publish_nowait([PublishRequest(("later",), "x")])
        figures = hub.topics.budget_figures()
        assert figures["history_bytes"] <= figures["history_budget_bytes"]

    asyncio.run(main())


def test_a_subscription_catching_up_in_evicted_history_ends_lagged() -> None:
    async def main() -> None:
        app = make_app(max_history_bytes=64 * KB, ring_max_bytes=64 * KB)
        slow = Stream(app, query=[("topic", "old")], capacity=1).start()
        await settle()
        slow.pause()
        for i in range(4):
            publish(app, "old", str(i) * 10_000)
            await settle(1)
        for i in range(8):  # other topics' publishes evict "old"'s frames
            publish(app, f"new{i}", "n" * 10_000)
            await settle(1)
        await settle()
        assert app.hub.metrics.lag_disconnects_total == 1
        slow.resume()
        await slow.finished()
        final = slow.events[-1]
        assert final.event == "sse-fast-disconnect"
        assert json.loads(final.data)["reason"] == "lagged"

    run(main())


def test_frame_overhead_covers_what_a_retained_frame_costs() -> None:
    """The budget counts FRAME_OVERHEAD per frame beside its data: what a frame
    really costs (its bytes object, slots, position, id) must not be more. (A
    publisher's own ids are also in the retry memory: bounded by dedupe_size.)"""

    async def main() -> tuple[int, int, int]:
        hub = Hub(Settings(ring_max_frames=4096))
        for name in ("warm-a", "warm-b"):  # rings and their slots exist before the count
            hub.publish_nowait([PublishRequest((name,), "w")])
        tracemalloc.start()
        try:
            gc.collect()
            start = tracemalloc.get_traced_memory()[0]
            for i in range(4000):
                hub.publish_nowait([PublishRequest((f"t{i % 4}",), "x" * 40)])
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
            gc.collect()
            end = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        return end - start, hub.topics.retained_bytes - 2 * len(b"data: w\n\n"), 4000

    used, data, frames = asyncio.run(main())
    per_frame = (used - data) / frames
    assert 0 < per_frame <= FRAME_OVERHEAD, f"{per_frame:.0f} bytes per frame beside its data"
