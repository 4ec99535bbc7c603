"""Fan-out: every in-sync stream gets each flush, slow ones catch up from the
rings without slowing the others, laggards are closed with a reason."""

from __future__ import annotations

import json
from typing import Any

from sse_fast.hub import Subscription

from ..support.asgi_harness import Stream, make_app, publish, run, settle


def test_publish_reaches_every_subscriber_in_order(eager: bool) -> None:
    async def main() -> None:
        app = make_app()
        streams = [Stream(app, query=[("topic", "t")], eager=eager).start() for _ in range(20)]
        await settle()
        ids = [publish(app, "t", i)[0] for i in range(30)]
        await settle(50)
        for stream in streams:
            assert stream.data() == [str(i) for i in range(30)]
            assert [e.id for e in stream.events] == ids
            stream.disconnect()
        for stream in streams:
            await stream.finished()
        assert app.hub.subscriptions == {}

    run(main())


def test_multi_topic_dedup_and_order(eager: bool) -> None:
    async def main() -> None:
        app = make_app()
        stream = Stream(app, query=[("topic", "x"), ("topic", "y")], eager=eager).start()
        await settle()
        publish(app, "x", "1")
        publish(app, ["x", "y"], "both")
        publish(app, "y", "2")
        publish(app, "z", "other")
        await settle(50)
        assert stream.data() == ["1", "both", "2"]
        stream.disconnect()
        await stream.finished()

    run(main())


def test_slow_subscriber_catches_up_coalesced_without_slowing_others() -> None:
    async def main() -> None:
        app = make_app()
        slow = Stream(app, query=[("topic", "s")], capacity=2).start()
        fast = Stream(app, query=[("topic", "s")], capacity=2).start()
        await settle()
        slow.pause()
        for i in range(50):
            publish(app, "s", i)
            await settle(1)  # one flush per publish: the slow stream's channel fills up
        await settle()
        assert fast.data() == [str(i) for i in range(50)]  # never waited for the slow one
        assert len(slow.events) == 0
        assert app.hub.stats(True)["connection_list"][0]["state"] == Subscription.CATCHING_UP
        writes_before = len(slow._channel) + len(slow._blocked)
        slow.resume()
        await settle(50)
        assert slow.data() == [str(i) for i in range(50)]
        assert writes_before <= 3  # one channel's worth plus one held write, not 50 messages
        # back in sync: the next publish goes straight through
        publish(app, "s", "after")
        await settle()
        assert slow.data()[-1] == "after"
        assert all(s.state == Subscription.IN_SYNC for s in app.hub.subscriptions.values())
        for s in (slow, fast):
            s.disconnect()
            await s.finished()

    run(main())


def test_events_applied_together_are_written_together(eager: bool) -> None:
    async def main() -> None:
        app = make_app()
        single = Stream(app, query=[("topic", "c")], eager=eager).start()
        multi = Stream(app, query=[("topic", "c"), ("topic", "d")], eager=eager).start()
        await settle()
        writes = {id(s): 0 for s in (single, multi)}
        for stream in (single, multi):
            original = stream._accept

            def counting(message: dict, stream: Stream = stream, original: Any = original) -> None:
                writes[id(stream)] += 1
                original(message)

            stream._accept = counting  # type: ignore[method-assign]
        for i in range(40):  # one loop iteration: one flush
            publish(app, "c" if i % 2 else "d", i)
        await settle()
        assert single.data() == [str(i) for i in range(1, 40, 2)]
        assert multi.data() == [str(i) for i in range(40)]  # merged in publish order
        assert writes == {id(single): 1, id(multi): 1}
        assert app.hub.metrics.delivered_total == 20 + 40
        for stream in (single, multi):
            stream.disconnect()
            await stream.finished()

    run(main())


def test_lagging_subscriber_is_disconnected_with_a_reason() -> None:
    async def main() -> None:
        app = make_app(ring_max_frames=10)
        slow = Stream(app, query=[("topic", "l")], capacity=1).start()
        fast = Stream(app, query=[("topic", "l")]).start()
        await settle()
        slow.pause()
        for i in range(30):
            publish(app, "l", i)
            await settle(1)
        await settle()
        assert app.hub.metrics.lag_disconnects_total == 1
        slow.resume()
        await slow.finished()
        assert slow.ended
        final = slow.events[-1]
        assert final.event == "sse-fast-disconnect"
        assert json.loads(final.data)["reason"] == "lagged"
        assert json.loads(final.data)["lost"] > 0
        assert fast.data() == [str(i) for i in range(30)]
        assert len(app.hub.subscriptions) == 1
        fast.disconnect()
        await fast.finished()

    run(main())


def test_a_send_that_raises_drops_only_that_subscriber() -> None:
    async def main() -> None:
        app = make_app()
        good = Stream(app, query=[("topic", "x")]).start()
        bad = Stream(app, query=[("topic", "x")]).start()
        await settle()

        def broken(message: dict) -> Any:
            raise RuntimeError("connection reset")

        for topic in app.hub.topics.by_name.values():  # the bad stream's send starts failing
            for subscriber in topic.in_sync_members():
                if subscriber.send == bad._send:
                    subscriber.send = broken  # type: ignore[method-assign]
                    if subscriber in topic.in_sync:
                        topic.in_sync[subscriber] = broken
        publish(app, "x", "still delivered")
        await settle()
        assert good.data() == ["still delivered"]
        assert len(app.hub.subscriptions) == 1
        await bad.finished()
        good.disconnect()
        await good.finished()

    run(main())


def test_a_lone_subscriber_that_falls_behind_catches_up() -> None:
    """A topic's lone subscriber (a user's own topic) is written by the flush's own
    path, not ``write_all``: a full channel sends it to catch-up all the same, and
    every event is counted delivered once."""

    async def main() -> None:
        app = make_app()
        lone = Stream(app, query=[("topic", "mine")], capacity=2).start()
        await settle()
        lone.pause()
        for i in range(30):
            publish(app, "mine", i)
            await settle(1)  # one flush per publish: the channel fills up
        await settle()
        (subscription,) = app.hub.subscriptions.values()
        assert subscription.state == Subscription.CATCHING_UP
        lone.resume()
        await settle(50)
        publish(app, "mine", "after")
        await settle()
        assert lone.data() == [*(str(i) for i in range(30)), "after"]
        assert subscription.state == Subscription.IN_SYNC
        assert app.hub.metrics.delivered_total == 31
        lone.disconnect()
        await lone.finished()

    run(main())


def test_a_lone_subscriber_whose_send_raises_is_detached() -> None:
    async def main() -> None:
        app = make_app()
        lone = Stream(app, query=[("topic", "mine")]).start()
        other = Stream(app, query=[("topic", "theirs")]).start()
        await settle()

        def broken(message: dict) -> Any:
            raise RuntimeError("connection reset")

        topic = app.hub.topics.by_name["mine"]
        subscription = topic.lone
        assert subscription is not None and not topic.in_sync
        topic.lone_send = broken  # the send it joined with (Subscription.enter_sync)
        publish(app, "mine", "lost with its client")
        publish(app, "theirs", "delivered")
        await settle()
        await lone.finished()
        assert other.data() == ["delivered"]
        assert list(app.hub.subscriptions.values()) != [subscription]
        assert len(app.hub.subscriptions) == 1
        assert app.hub.metrics.delivered_total == 1
        other.disconnect()
        await other.finished()

    run(main())


def test_the_lone_subscriber_leaving_leaves_the_others_in_sync() -> None:
    """The first in-sync subscription of a topic is held apart (``Topic.lone``); when
    it leaves, the others still get every event and the next one to join takes its
    place."""

    async def main() -> None:
        app = make_app()
        first = Stream(app, query=[("topic", "t")]).start()
        second = Stream(app, query=[("topic", "t")]).start()
        await settle()
        topic = app.hub.topics.by_name["t"]
        assert topic.lone is not None and len(topic.in_sync) == 1
        publish(app, "t", "both")
        await settle()
        first.disconnect()
        await first.finished()
        assert topic.lone is None and len(topic.in_sync) == 1
        publish(app, "t", "second only")
        await settle()
        third = Stream(app, query=[("topic", "t")]).start()
        await settle()
        assert topic.lone is not None and topic.lone.send == third._send
        publish(app, "t", "again")
        await settle()
        assert first.data() == ["both"]
        assert second.data() == ["both", "second only", "again"]
        assert third.data() == ["again"]
        assert app.hub.metrics.delivered_total == 2 + 1 + 2
        for stream in (second, third):
            stream.disconnect()
            await stream.finished()
        assert topic.in_sync_members() == []

    run(main())
