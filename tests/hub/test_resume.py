"""Resume: ``Last-Event-ID`` to positions, and honest ``unknown``/``evicted``."""

from __future__ import annotations

import json

from sse_fast.hub import Hub, PublishRequest, resume
from sse_fast.settings import Settings

from ..support.asgi_harness import Stream, make_app, publish, run, settle


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
        assert missed.id == str(app.hub.last_position)
        stream.disconnect()
        await stream.finished()
        assert app.hub.metrics.resume_total == {"resumed": 4, "unknown": 2, "evicted": 1}

    run(main())


def test_sweep_drops_idle_topics_and_remembers_their_position() -> None:
    now = [1000.0]
    hub = Hub(Settings(topic_ttl=10), clock=lambda: now[0])
    (first,) = hub.publish_nowait([PublishRequest(("gone",), 1)])
    now[0] += 11
    assert hub.sweep() == 1 and "gone" not in hub.topics.by_name
    topic = hub.topics.get("gone", now[0])
    status, _ = resume.resolve(
        [topic], str(int(first) - 1), hub.broker.first_position, hub.last_position
    )
    assert status == "evicted"  # its history went with the sweep: say so
