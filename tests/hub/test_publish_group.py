"""Publishing together (``hub/_publish_group.py``): the small publishes awaited in one
turn of the loop are one write, and each still gets the answer it would have had
alone, in the order they came."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from sse_fast.brokers.durable import EventLog, read
from sse_fast.brokers.durable import _log as durable_log
from sse_fast.brokers.local import LocalBroker
from sse_fast.hub import Hub, PublishError, PublishRequest
from sse_fast.hub._publish_group import GROUP_EVENTS, WIDE_FANOUT
from sse_fast.settings import Settings

from ..support.asgi_harness import PyEmptyAwaitable, settle
from ..support.stores import counted_store


def stored_hub(path: Path, **settings: Any) -> tuple[Hub, EventLog, list[int]]:
    """A hub on a data directory; the sizes of the store's appends, as they happen."""
    store, appends = counted_store(path)
    return Hub(Settings(**settings), broker=LocalBroker(store=store)), store, appends


def stored(hub: Hub, name: str) -> list[bytes]:
    """The frames topic ``name`` holds, oldest first."""
    topic = hub.topics.by_name.get(name)
    if topic is None or not topic.has_history:
        return []
    return topic.ring.read_frames(topic.ring.oldest - 1)


def one(topic: str, data: Any, id: str | None = None) -> list[PublishRequest]:
    return [PublishRequest((topic,), data, id=id)]


def test_the_publishes_of_one_turn_are_one_write_each_answered_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        hub, _, appends = stored_hub(tmp_path)
        await hub.start()
        answers = await asyncio.gather(*(hub.publish(one(f"t{n % 3}", n)) for n in range(10)))
        assert appends == [10]  # one write for the ten
        assert hub.metrics.publishes_grouped_total == 10
        positions = [int(ids[0]) for ids in answers]
        assert positions == sorted(positions) and len(set(positions)) == 10
        assert [f.count(b"\n") > 0 for f in stored(hub, "t0")] == [True] * 4
        assert b"data: 0\n" in stored(hub, "t0")[0] and b"data: 9\n" in stored(hub, "t0")[3]
        assert hub.metrics.published_total == 10
        # one publish alone in its turn: its own write, as before
        assert await hub.publish(one("t0", "alone")) != []
        assert appends == [10, 1]
        await hub.stop()
        events = read(str(tmp_path)).events
        assert [e.position for e in events] == sorted(e.position for e in events)
        assert [e.id for e in events[:10]] == [ids[0] for ids in answers]

    asyncio.run(main())


def test_a_larger_publish_goes_at_once_after_the_waiting_ones(tmp_path: Path) -> None:
    async def main() -> None:
        hub, _, appends = stored_hub(tmp_path)
        await hub.start()
        small = [asyncio.ensure_future(hub.publish(one("t", n))) for n in range(3)]
        await asyncio.sleep(0)  # the three wait for the end of the turn
        batch = [PublishRequest(("t",), f"b{n}") for n in range(GROUP_EVENTS + 1)]
        big = await hub.publish(batch)
        assert appends == [3, GROUP_EVENTS + 1]  # the waiting ones first, then the batch
        first = [int((await task)[0]) for task in small]
        assert max(first) < int(big[0])
        # publish_nowait: the same
        waiting = asyncio.ensure_future(hub.publish(one("t", "w")))
        await asyncio.sleep(0)
        (now,) = hub.publish_nowait(one("t", "now"))
        assert int((await waiting)[0]) < int(now) and appends[-2:] == [1, 1]
        await hub.stop()

    asyncio.run(main())


def test_a_publish_cancelled_while_waiting_is_not_published(tmp_path: Path) -> None:
    async def main() -> None:
        hub, _, appends = stored_hub(tmp_path)
        await hub.start()
        kept = asyncio.ensure_future(hub.publish(one("t", "kept")))
        dropped = asyncio.ensure_future(hub.publish(one("t", "dropped")))
        await asyncio.sleep(0)
        dropped.cancel()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await dropped
        assert appends == [1]
        assert [b"data: kept\n" in f for f in stored(hub, "t")] == [True]
        await hub.stop()

    asyncio.run(main())


def test_one_publish_refused_in_a_group_is_refused_alone(tmp_path: Path) -> None:
    """Room for one more topic with history: of two new topics in one turn the first
    is published and the second refused, as one after the other; the others of the
    turn are published."""

    async def main() -> None:
        hub, _, appends = stored_hub(tmp_path, max_topics=2)
        await hub.start()
        await hub.publish(one("old", 0))
        results = await asyncio.gather(
            hub.publish(one("old", 1)),
            hub.publish(one("new1", 2)),
            hub.publish(one("new2", 3)),
            hub.publish(one("old", 4)),
            return_exceptions=True,
        )
        refused = results[2]
        assert isinstance(refused, PublishError) and refused.status == 503
        assert "topic limit reached" in str(refused)
        assert all(isinstance(r, list) for i, r in enumerate(results) if i != 2)
        assert appends == [1, 1, 1, 1]  # tried together, then each alone
        assert len(stored(hub, "old")) == 3 and len(stored(hub, "new1")) == 1
        assert "new2" not in hub.topics.by_name or not hub.topics.by_name["new2"].has_history
        await hub.stop()

    asyncio.run(main())


def test_a_write_that_fails_fails_each_publish_of_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        hub, store, appends = stored_hub(tmp_path)
        await hub.start()
        await hub.publish(one("t", "before", id="b"))

        class FullDisk:
            def __getattr__(self, name: str) -> Any:
                return getattr(os, name)

            def write(self, fd: int, data: Any) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(durable_log, "os", FullDisk())
        results = await asyncio.gather(
            *(hub.publish(one("t", n, id=f"r{n}")) for n in range(4)), return_exceptions=True
        )
        assert all(isinstance(r, PublishError) for r in results)
        assert {(r.status, r.reason) for r in results} == {(503, "storage")}  # type: ignore[union-attr]
        assert len({id(r) for r in results}) == 4  # an exception object each
        assert store.write_errors == 1 and appends == [1]  # one attempt for the group
        assert len(stored(hub, "t")) == 1  # nothing delivered
        monkeypatch.undo()
        # nothing was remembered: the retries are published
        again = await asyncio.gather(*(hub.publish(one("t", n, id=f"r{n}")) for n in range(4)))
        assert again == [["r0"], ["r1"], ["r2"], ["r3"]] and appends == [1, 4]
        await hub.stop()
        assert [e.id for e in read(str(tmp_path)).events] == ["b", "r0", "r1", "r2", "r3"]

    asyncio.run(main())


def test_a_fault_in_a_group_fails_each_publish_and_is_not_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a refusal (which publishes nothing): each gets the error, nothing is
    published again alone (the fault may have come after the store)."""

    async def main() -> None:
        hub, _, appends = stored_hub(tmp_path)
        await hub.start()
        broker = hub.broker
        assert isinstance(broker, LocalBroker)
        calls: list[int] = []

        def broken(requests: list[PublishRequest], accepted_at: float) -> list[str]:
            calls.append(len(requests))
            raise RuntimeError("a bug")

        monkeypatch.setattr(broker, "publish_nowait", broken)
        results = await asyncio.gather(
            *(hub.publish(one("t", n)) for n in range(3)), return_exceptions=True
        )
        assert calls == [3] and appends == []
        assert all(isinstance(r, RuntimeError) and str(r) == "a bug" for r in results)
        monkeypatch.undo()
        await hub.stop()

    asyncio.run(main())


def test_a_repeated_id_in_one_turn_is_published_once(tmp_path: Path) -> None:
    async def main() -> None:
        hub, _, appends = stored_hub(tmp_path)
        await hub.start()
        results = await asyncio.gather(
            hub.publish(one("t", "first", id="same")),
            hub.publish(one("t", "retry", id="same")),
            hub.publish(one("u", "other topics", id="same")),
        )
        assert results == [["same"], ["same"], ["same"]]
        assert appends == [2] and len(stored(hub, "t")) == 1 and len(stored(hub, "u")) == 1
        await hub.stop()

    asyncio.run(main())


def test_a_publish_to_a_wide_topic_is_answered_before_its_fan_out(tmp_path: Path) -> None:
    """A publish to a topic with ``WIDE_FANOUT`` streams goes at once, as without a
    store (after the ones waiting): answered within its own step, before the flush
    hands its event to the streams. Had it waited for its turn's group, it would be
    answered after that flush: under Granian behind every write of the fan-out."""

    async def main() -> None:
        hub, _, appends = stored_hub(tmp_path)
        await hub.start()
        order: list[str] = []

        def send(message: MutableMapping[str, Any]) -> PyEmptyAwaitable:
            if b"data: wide\n" in message.get("body", b""):
                order.append("delivered")
            return PyEmptyAwaitable()

        future = asyncio.get_running_loop().create_future
        for _ in range(WIDE_FANOUT):
            await hub.attach(["wide"], None, send, future)
        await hub.attach(["narrow"], None, send, future)

        async def publisher(topic: str, data: str) -> list[str]:
            ids = await hub.publish(one(topic, data))
            order.append(f"answered {data}")
            return ids

        narrow = asyncio.ensure_future(publisher("narrow", "waiting"))
        wide = asyncio.ensure_future(publisher("wide", "wide"))
        await asyncio.sleep(0)
        assert wide.done()  # published and answered within its own step
        await settle()
        assert order[0] == "answered wide" and order.count("delivered") == WIDE_FANOUT
        assert int((await narrow)[0]) < int(wide.result()[0])  # the waiting one went first
        assert appends == [1, 1] and hub.metrics.publishes_grouped_total == 0
        await hub.stop()

    asyncio.run(main())


def test_without_a_store_nothing_waits(tmp_path: Path) -> None:
    async def main() -> None:
        hub = Hub(Settings(), broker=LocalBroker())
        await hub.start()
        task = asyncio.ensure_future(hub.publish(one("t", 1)))
        await asyncio.sleep(0)
        assert task.done() and stored(hub, "t")  # published within its own step
        assert hub.metrics.publishes_grouped_total == 0
        await hub.stop()

    asyncio.run(main())


def test_the_hub_stop_publishes_the_waiting_ones_before_the_store_closes(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        hub, store, appends = stored_hub(tmp_path)
        await hub.start()
        order: list[str] = []
        close, publish_waiting = store.close, hub.publish_group.publish_waiting

        def closing() -> None:
            order.append("close")
            close()

        def publishing() -> None:
            order.append(f"publish {len(hub.publish_group._waiting)}")
            publish_waiting()

        store.close = closing  # type: ignore[method-assign]
        hub.publish_group.publish_waiting = publishing  # type: ignore[method-assign]
        hub.publish_group._waiting.append(
            (one("t", "last"), hub.clock(), asyncio.get_running_loop().create_future())
        )
        await hub.stop()
        assert order == ["publish 1", "close"] and appends == [1]
        assert len(read(str(tmp_path)).events) == 1

    asyncio.run(main())
