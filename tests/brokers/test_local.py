"""The broker interface and the local broker: ids, whole batches, binding, and
a third broker plugged into a hub with nothing else changed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sse_fast.brokers import Broker
from sse_fast.brokers._sequencing import Sequenced, first_position, sequence
from sse_fast.brokers.local import LocalBroker
from sse_fast.hub import Hub, PublishError, PublishRequest
from sse_fast.settings import Settings

from ..support.asgi_harness import Stream, attach, make_app, settle


class Recorder:
    """A member that records what its broker delivers."""

    def __init__(self) -> None:
        self.delivered: list[Sequence[Sequenced]] = []
        self.last_position = 0

    def apply(self, items: Sequence[Sequenced]) -> None:
        self.delivered.append(items)

    def rejoined(self, history_from: int, reason: str | None) -> None:
        raise AssertionError("the local broker never rejoins")

    def report(self, query: dict[str, object]) -> dict[str, object]:
        return {}


def test_ids_are_positions_unless_the_publisher_names_them() -> None:
    member = Recorder()
    delivered = member.delivered
    broker = LocalBroker()
    broker.bind(member)
    first = broker.first_position
    ids = broker.publish_nowait(
        [PublishRequest(("a",), 1), PublishRequest(("a", "b"), 2, id="mine")], 0.0
    )
    assert ids == [str(first), "mine"]
    ((one, two),) = delivered
    assert (one.position, two.position) == (first, first + 1)
    assert two.topics == ("a", "b") and two.frame == b"id: mine\ndata: 2\n\n"


def test_a_batch_with_an_unencodable_event_uses_no_position() -> None:
    member = Recorder()
    delivered = member.delivered
    broker = LocalBroker()
    broker.bind(member)
    with pytest.raises(PublishError) as info:
        broker.publish_nowait(
            [PublishRequest(("a",), "ok"), PublishRequest(("a",), "x", event="a\nb")], 0.0
        )
    assert info.value.status == 400 and "event" in str(info.value)
    assert delivered == [] and broker.next_position == broker.first_position


def test_a_broker_serves_one_hub() -> None:
    broker = LocalBroker()
    Hub(Settings(), broker=broker)
    with pytest.raises(RuntimeError, match="already bound"):
        Hub(Settings(), broker=broker)
    with pytest.raises(RuntimeError, match="not bound"):
        LocalBroker().publish_nowait([PublishRequest(("a",), 1)], 0.0)


class QueueBroker(Broker):
    """A third broker, as a Redis one would be: sequences elsewhere (here: a task
    standing in for the remote side), delivers later, asynchronously."""

    def __init__(self) -> None:
        super().__init__()
        self.first_position = first_position()
        self.next_position = self.first_position

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        items = sequence(requests, self.next_position, accepted_at)
        self.next_position += len(items)
        await asyncio.sleep(0)  # the round trip
        asyncio.get_running_loop().call_soon(self.deliver, items)
        return [item.id for item in items]


def test_fan_out_and_resume_work_unchanged_on_another_broker(eager: bool) -> None:
    async def main() -> None:
        app = make_app()
        app.hub = hub = Hub(app.settings, broker=QueueBroker())
        app.events.hub = app.publish.hub = app.operations.hub = hub
        await hub.start()
        stream = Stream(app, query=[("topic", "q")], eager=eager).start()
        await settle()
        ids = await hub.publish([PublishRequest(("q",), n) for n in range(5)])
        await settle(50)
        assert stream.data() == ["0", "1", "2", "3", "4"]
        assert [e.id for e in stream.events] == ids
        resumed = await attach(hub, ["q"], ids[1])
        assert resumed.resume == "resumed"
        assert (await attach(hub, ["q"], "nonsense")).resume == "unknown"
        stream.disconnect()
        await stream.finished()
        await hub.stop()

    asyncio.run(main())
