"""In-process tests of the hub and the ASGI app (eager Granian-like and lazy sends)."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

import orjson
import pytest

from sse_fast.app import App
from sse_fast.hub import Hub, PublishError, PublishRequest, Subscriber
from sse_fast.settings import Settings

from .asgi_harness import Stream, request, settle


def make_app(**settings: Any) -> App:
    settings.setdefault("allow_anonymous_publish", True)  # test_security.py covers auth
    settings.setdefault("connect_rate_per_ip", 0)  # ... and the limits
    settings.setdefault("max_connections_per_ip", 0)
    return App(Settings(**settings))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(params=[True, False], ids=["eager", "lazy"])
def eager(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def publish(app: App, topic: str | list[str], data: Any, **kw: Any) -> list[str]:
    topics = (topic,) if isinstance(topic, str) else tuple(topic)
    return app.hub.publish_nowait([PublishRequest(topics, data, **kw)])


def test_stream_headers_and_first_frame(eager: bool) -> None:
    async def main() -> None:
        app = make_app(retry_ms=1234)
        stream = Stream(app, query=[("topic", "a")], eager=eager).start()
        await settle()
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-store"
        assert stream.headers["x-accel-buffering"] == "no"
        assert "connection" not in stream.headers
        assert stream.parser.retry == 1234
        assert stream.parser.last_event_id == str(app.hub.last_gseq)
        stream.disconnect()
        await stream.finished()

    run(main())


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
        assert app.hub.subscribers == {}

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
        assert app.hub.stats(True)["connection_list"][0]["state"] == Subscriber.CATCHING_UP
        writes_before = len(slow._channel) + len(slow._blocked)
        slow.resume()
        await settle(50)
        assert slow.data() == [str(i) for i in range(50)]
        assert writes_before <= 3  # one channel's worth plus one held write, not 50 messages
        # back in sync: the next publish goes straight through
        publish(app, "s", "after")
        await settle()
        assert slow.data()[-1] == "after"
        assert all(s.state == Subscriber.READY for s in app.hub.subscribers.values())
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
        assert len(app.hub.subscribers) == 1
        fast.disconnect()
        await fast.finished()

    run(main())


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
        assert app.hub.subscribers == {}

    run(main())


def test_resume_outcomes(eager: bool) -> None:
    async def main() -> None:
        app = make_app(ring_max_frames=4)
        ids = [publish(app, "r", i)[0] for i in range(4)]
        publish(app, "r2", "elsewhere", id="custom")
        cases = [
            ([("topic", "r")], {"last-event-id": ids[1]}, "resumed", ["2", "3"]),
            ([("topic", "r"), ("lastEventId", ids[2])], {}, "resumed", ["3"]),
            ([("topic", "r")], {"last-event-id": "nope"}, "unknown", []),
            ([("topic", "r")], {"last-event-id": "123"}, "unknown", []),
            # a custom id found in another topic of the subscription positions all topics
            ([("topic", "r"), ("topic", "r2")], {"last-event-id": "custom"}, "resumed", []),
        ]
        for query, headers, outcome, data in cases:
            stream = Stream(app, query=query, headers=headers, eager=eager).start()
            await settle()
            assert stream.headers["sse-fast-resume"] == outcome, (query, headers)
            if outcome == "unknown":
                assert stream.events[0].event == "sse-fast-missed"
                assert stream.data()[1:] == data
            else:
                assert stream.data() == data
            stream.disconnect()
            await stream.finished()
        publish(app, "r", "evicting")  # ring holds 4: ids[0] is gone, nothing missed yet
        stream = Stream(
            app, query=[("topic", "r")], headers={"last-event-id": ids[0]}, eager=eager
        ).start()
        await settle()
        assert stream.headers["sse-fast-resume"] == "resumed"
        assert stream.data() == ["1", "2", "3", "evicting"]
        stream.disconnect()
        await stream.finished()
        publish(app, "r", "evicting more")  # now ids[1], which the client lacks, is gone
        stream = Stream(
            app, query=[("topic", "r")], headers={"last-event-id": ids[0]}, eager=eager
        ).start()
        await settle()
        assert stream.headers["sse-fast-resume"] == "evicted"
        missed = stream.events[0]
        assert json.loads(missed.data) == {"reason": "evicted", "last_event_id": ids[0]}
        assert missed.id == str(app.hub.last_gseq)
        stream.disconnect()
        await stream.finished()
        assert app.hub.metrics.resume_total == {"resumed": 4, "unknown": 2, "evicted": 1}

    run(main())


def test_publishes_during_a_lazy_start_are_not_lost() -> None:
    async def main() -> None:
        app = make_app()
        stream = Stream(app, query=[("topic", "p")], eager=False)
        stream.start()
        await asyncio.sleep(0)  # the handler is inside its start write
        publish(app, "p", "early")
        await settle(50)
        assert stream.data() == ["early"]
        stream.disconnect()
        await stream.finished()

    run(main())


def test_heartbeat_reaches_idle_streams(eager: bool) -> None:
    async def main() -> None:
        app = make_app()
        stream = Stream(app, query=[("topic", "h")], eager=eager).start()
        await settle()
        assert app.hub.heartbeat() == 1
        await settle()
        assert bytes(stream.raw).endswith(b": \n\n")
        stream.disconnect()
        await stream.finished()

    run(main())


def test_drain_closes_every_stream_with_jittered_retry(eager: bool) -> None:
    async def main() -> None:
        app = make_app(retry_ms=1000, drain_retry_jitter_ms=500)
        streams = [Stream(app, query=[("topic", "d")], eager=eager).start() for _ in range(30)]
        await settle()
        await asyncio.wait_for(app.hub.drain(), 5)
        for stream in streams:
            await stream.finished()
            assert stream.ended
            assert stream.events[-1].event == "sse-fast-disconnect"
            assert 1000 <= stream.parser.retry <= 1500
        assert len({s.parser.retry for s in streams}) > 1
        assert app.hub.subscribers == {}
        # new subscriptions are refused while draining
        status, headers, _body = await request(app, "GET", "/events", query=[("topic", "d")])
        assert status == 503 and headers["retry-after"] == "1"

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
        refs = [weakref.ref(s) for s in app.hub.subscribers.values()]
        assert len(refs) == 1000
        for stream in streams:
            stream.disconnect()
        for stream in streams:
            await stream.finished()
        await settle()
        hub = app.hub
        assert hub.subscribers == {}
        for topic in hub.topics.values():
            assert not topic.subscribers and not topic.ready and not topic.catching
        del streams
        gc.collect()
        assert all(r() is None for r in refs), "subscriber objects are still referenced"
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == []

    run(main())


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"", 400, "not valid JSON"),
        (b'"text"', 400, "JSON object"),
        (b'{"topic": "a"}', 400, "data is required"),
        (b'{"topic": "a", "data": null}', 400, "data is required"),
        (b'{"topic": "a", "topics": ["b"], "data": 1}', 400, "either topic or topics"),
        (b'{"topics": [], "data": 1}', 400, "non-empty list"),
        (b'{"topics": "a", "data": 1}', 400, "non-empty list"),
        (b'{"topic": 5, "data": 1}', 400, "string"),
        (b'{"topic": "' + b"x" * 201 + b'", "data": 1}', 400, "limit is 200"),
        (b'{"topic": "a*", "data": 1}', 400, "characters"),
        (b'{"topic": "a", "data": 1, "id": ""}', 400, "non-empty string"),
        (b'{"topic": "a", "data": 1, "id": 5}', 400, "non-empty string"),
        (b'{"topic": "a", "data": 1, "retry": 1.5}', 400, "retry"),
        (b'{"topic": "a", "data": 1, "retry": true}', 400, "retry"),
        (b'{"topic": "a", "data": 1, "event": ""}', 400, "event"),
        (b'{"events": []}', 400, "non-empty list"),
        (b'{"events": [1]}', 400, "events[0]"),
        (b'{"events": [{"topic": "a", "data": 1}], "x": 1}', 400, "only the field events"),
        (
            orjson.dumps({"events": [{"topic": "a", "data": i} for i in range(1001)]}),
            413,
            "limit is 1000",
        ),
    ],
)
def test_invalid_publish_bodies(body: bytes, status: int, fragment: str) -> None:
    async def main() -> None:
        app = make_app()
        before = app.hub.last_gseq
        code, _headers, response = await request(app, "POST", "/publish", body)
        assert code == status
        assert fragment in json.loads(response)["error"]
        assert app.hub.last_gseq == before and app.hub.metrics.published_total == 0

    run(main())


def test_publish_over_http_and_ids() -> None:
    async def main() -> None:
        app = make_app()
        stream = Stream(app, query=[("topic", "a")]).start()
        await settle()
        code, _, body = await request(
            app,
            "POST",
            "/publish",
            orjson.dumps(
                {
                    "events": [
                        {"topic": "a", "data": {"k": [1, 2]}, "event": "e", "retry": 10},
                        {"topic": "a", "data": "plain", "id": "mine"},
                    ]
                }
            ),
        )
        assert code == 200
        ids = json.loads(body)["ids"]
        assert ids[1] == "mine" and ids[0].isdigit()
        await settle()
        assert [(e.event, e.data, e.id, e.retry) for e in stream.events] == [
            ("e", '{"k":[1,2]}', ids[0], 10),
            ("message", "plain", "mine", None),
        ]
        stream.disconnect()
        await stream.finished()

    run(main())


def test_body_limits_and_content_type() -> None:
    async def main() -> None:
        app = make_app(max_body_bytes=100)
        code, _, _ = await request(app, "POST", "/publish", b"{}" * 60)
        assert code == 413
        code, _, _ = await request(
            app, "POST", "/publish", b"{}", headers={"content-length": "1000"}
        )
        assert code == 413
        code, _, _body = await request(
            app, "POST", "/publish", b"{}", headers={"content-type": "text/plain"}
        )
        assert code == 415

    run(main())


def test_topic_limit_is_a_clear_503() -> None:
    async def main() -> None:
        app = make_app(max_topics=2)
        publish(app, "one", 1)
        publish(app, "two", 2)
        with pytest.raises(PublishError) as info:
            publish(app, "three", 3)
        assert info.value.status == 503
        code, _, body = await request(app, "POST", "/publish", b'{"topic":"four","data":1}')
        assert code == 503 and b"topic limit" in body

    run(main())


def test_encode_errors_refuse_the_whole_batch() -> None:
    hub = Hub(Settings())
    with pytest.raises(PublishError):
        hub.publish_nowait([PublishRequest(("a",), "ok"), PublishRequest(("a",), object())])
    assert hub.metrics.published_total == 0 and "a" not in hub.topics


def test_sweep_drops_idle_topics_and_remembers_their_position() -> None:
    now = [1000.0]
    hub = Hub(Settings(topic_ttl=10), clock=lambda: now[0])
    (first,) = hub.publish_nowait([PublishRequest(("gone",), 1)])
    now[0] += 11
    assert hub.sweep() == 1 and "gone" not in hub.topics
    topic = hub._topic("gone", now[0])
    status, _ = hub.resolve_resume([topic], str(int(first) - 1))
    assert status == "evicted"  # its history went with the sweep: say so


def test_a_send_that_raises_drops_only_that_subscriber() -> None:
    async def main() -> None:
        app = make_app()
        good = Stream(app, query=[("topic", "x")]).start()
        bad = Stream(app, query=[("topic", "x")]).start()
        await settle()

        def broken(message: dict) -> Any:
            raise RuntimeError("connection reset")

        for topic in app.hub.topics.values():  # the bad stream's send starts failing
            for subscriber in list(topic.ready):
                if subscriber.send == bad._send:
                    topic.ready[subscriber] = broken
        publish(app, "x", "still delivered")
        await settle()
        assert good.data() == ["still delivered"]
        assert len(app.hub.subscribers) == 1
        await bad.finished()
        good.disconnect()
        await good.finished()

    run(main())


def test_ops_endpoints_in_process() -> None:
    async def main() -> None:
        app = make_app()
        assert (await request(app, "GET", "/healthz"))[0] == 200
        assert (await request(app, "GET", "/readyz"))[0] == 200
        code, headers, body = await request(app, "GET", "/metrics")
        assert code == 200 and b"sse_fast_publish_to_write_seconds_count 0" in body
        code, headers, body = await request(app, "POST", "/metrics")
        assert code == 405 and headers["allow"] == "GET"
        code, _, body = await request(app, "GET", "/missing")
        assert code == 404 and b"/events" in body

    run(main())
