"""The open streams of a hub (``sse_fast/hub/_streams.py``): the one place a stream
joins and leaves, symmetrically, and the listeners told, any number of them, given
at construction (presence, webhooks and the metrics in a hub)."""

from __future__ import annotations

import asyncio
from typing import Any

from sse_fast._asgi import Message
from sse_fast.hub import Hub
from sse_fast.hub._metrics import Metrics
from sse_fast.hub._presence import PresenceNews
from sse_fast.hub._streams import StreamListener, Streams
from sse_fast.hub._subscription import NO_PEER, Subscription
from sse_fast.hub._topics import Topics
from sse_fast.hub._webhooks import Webhooks
from sse_fast.protocol import Reason
from sse_fast.settings import Settings

from ..support.asgi_harness import PyEmptyAwaitable


class Recorder(StreamListener):
    """Writes down what it is told, in one list shared by every recorder."""

    def __init__(self, name: str, told: list[tuple[str, str, int]], follow: bool) -> None:
        self.name = name
        self.told = told
        self.follow = follow

    def joined(self, subscription: Subscription) -> None:
        self.told.append((self.name, "joined", subscription.id))

    def left(self, subscription: Subscription) -> None:
        self.told.append((self.name, "left", subscription.id))

    def follows(self, subscription: Subscription) -> bool:
        return self.follow

    def ended(self, subscription: Subscription, reason: str) -> None:
        self.told.append((self.name, f"ended {reason}", subscription.id))


def _written(message: Message) -> PyEmptyAwaitable:
    """A ``send`` that writes at once, as Granian's does."""
    return PyEmptyAwaitable()


def _stream(streams: Streams, topics: Topics, *names: str) -> Subscription:
    loop = asyncio.get_running_loop()
    chosen = tuple(topics.get(name, 0.0) for name in names)
    return Subscription(streams.next_id(), _written, chosen, NO_PEER, 0.0, loop.create_future())


def test_every_listener_is_told_of_each_join_and_leave_once_in_order() -> None:
    async def main() -> None:
        told: list[tuple[str, str, int]] = []
        topics = Topics(Settings())
        streams = Streams(
            topics, lambda: 0.0, [Recorder("a", told, False), Recorder("b", told, False)]
        )
        one = _stream(streams, topics, "x", "y")
        streams.join(one)
        x, y = topics.by_name["x"], topics.by_name["y"]
        assert streams.by_id == {one.id: one} and (x.subscribers, y.subscribers) == (1, 1)
        assert told == [("a", "joined", one.id), ("b", "joined", one.id)]
        streams.leave(one)
        streams.leave(one)  # again: left alone
        assert told[2:] == [("a", "left", one.id), ("b", "left", one.id)]
        assert streams.by_id == {} and one.state == Subscription.CLOSED
        assert (x.subscribers, y.subscribers) == (0, 0)
        assert topics.by_name == {}  # topics without history go with their last stream

    asyncio.run(main())


def test_a_listener_that_follows_a_stream_is_told_how_it_ended() -> None:
    async def main() -> None:
        told: list[tuple[str, str, int]] = []
        topics = Topics(Settings())
        listeners = [Recorder("quiet", told, False), Recorder("follower", told, True)]
        streams = Streams(topics, lambda: 0.0, listeners)
        closed, cancelled = _stream(streams, topics, "x"), _stream(streams, topics, "x")
        streams.join(closed)
        streams.join(cancelled)
        streams.leave(closed)
        closed.closed.set_result(Reason.LAGGED)
        cancelled.closed.cancel()  # a handler cancelled while it waited: the server stops
        await asyncio.sleep(0)  # the futures' callbacks run
        ends = [entry for entry in told if entry[1].startswith("ended")]
        assert ends == [
            ("follower", f"ended {Reason.LAGGED}", closed.id),
            ("follower", f"ended {Reason.SERVER_STOPPED}", cancelled.id),
        ]

    asyncio.run(main())


def test_a_hub_gives_its_streams_presence_webhooks_and_metrics_as_listeners() -> None:
    settings = Settings(
        presence_topics="room:*",
        webhook_urls="http://127.0.0.1:9/hook",
        webhook_secret="webhook-secret-for-the-tests",
    )
    hub = Hub(settings)
    listeners: tuple[Any, ...] = hub.streams.listeners
    assert [type(listener) for listener in listeners] == [PresenceNews, Webhooks, Metrics]
    assert listeners[0] is hub.presence_news and listeners[1] is hub.webhooks
    assert listeners[2] is hub.metrics and hub.subscriptions is hub.streams.by_id
    assert [type(listener) for listener in Hub(Settings()).streams.listeners] == [
        PresenceNews,
        Metrics,
    ]


def test_presence_webhooks_and_metrics_each_hear_a_stream_join_and_leave() -> None:
    """The old leave path had one slot (``Closer.on_leave``, presence's): each listener
    now hears each stream, and the webhooks its end with the reason."""

    async def main() -> None:
        settings = Settings(
            presence_topics="room:*",
            webhook_urls="http://127.0.0.1:9/hook",
            webhook_secret="webhook-secret-for-the-tests",
        )
        hub = Hub(settings)

        async def receive() -> Message:
            await asyncio.Event().wait()  # the client never leaves by itself
            return {}

        stream = await hub.attach(["room:1"], None, _written, receive, subject="alice")
        assert hub.metrics.connections_total == 1
        assert hub.presence_news.pending == {"room:1": {"alice": 1}}
        hub.close(stream, Reason.TOKEN_EXPIRED)
        await stream.closed
        await asyncio.sleep(0)  # the webhooks' end callback runs
        assert hub.presence_news.pending == {"room:1": {"alice": 0}}
        assert hub.topics.by_name == {} and hub.subscriptions == {}
        assert hub.webhooks is not None
        (delivery,) = hub.webhooks.deliveries
        kinds = [(event["type"], event.get("reason")) for event in delivery.pending]
        assert kinds == [("connect", None), ("disconnect", Reason.TOKEN_EXPIRED)]

    asyncio.run(main())
