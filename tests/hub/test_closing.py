"""Closing: stalled writes are cut, vanished clients free everything."""

from __future__ import annotations

import asyncio
import gc
import weakref

from ..support.asgi_harness import Stream, make_app, publish, run, settle


def test_stalled_subscriber_is_cut_after_timeout() -> None:
    async def main() -> None:
        app = make_app(catch_up_timeout=0.05)
        stuck = Stream(app, query=[("topic", "st")], capacity=1).start()
        await settle()
        stuck.pause()
        for i in range(3):
            publish(app, "st", i)
            await settle(1)
        await stuck.finished(timeout=2)
        assert app.hub.metrics.stall_disconnects_total == 1
        assert app.hub.subscriptions == {}

    run(main())


def test_vanished_clients_free_everything(eager: bool) -> None:
    async def main() -> None:
        app = make_app()
        streams = [
            Stream(
                app, query=[("topic", "v"), ("topic", f"own{i}")], eager=eager, capacity=1
            ).start()
            for i in range(1000)
        ]
        await settle()
        for stream in streams[:500]:
            stream.pause()  # half of them are catching up when they vanish
        publish(app, "v", "x")
        publish(app, "v", "y")
        await settle()
        refs = [weakref.ref(s) for s in app.hub.subscriptions.values()]
        assert len(refs) == 1000
        for stream in streams:
            stream.disconnect()
        for stream in streams:
            await stream.finished()
        await settle()
        hub = app.hub
        assert hub.subscriptions == {}
        for topic in hub.topics.by_name.values():
            assert not topic.subscribers and not topic.in_sync_members()
            assert not topic.catching_up
        del streams
        gc.collect()
        assert all(r() is None for r in refs), "subscriber objects are still referenced"
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == []

    run(main())
