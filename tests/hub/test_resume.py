"""Resume: ``Last-Event-ID`` to positions, and honest ``unknown``/``evicted``."""

from __future__ import annotations

import json

from sse_fast.brokers._sequencing import Sequenced
from sse_fast.hub import Hub, PublishRequest
from sse_fast.hub import _resume as resume
from sse_fast.hub._topics import Topics
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
        # it names the topic that lost events after the id, up to which position
        gone = app.hub.topics.by_name["r"].evicted_up_to
        assert json.loads(missed.data) == {
            "reason": "evicted",
            "last_event_id": ids[0],
            "topics": {"r": gone},
        }
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


def test_the_sequencers_own_ids_resolve_by_position() -> None:
    """An id that is its event's position is not in the ring's index (only publishers'
    ids are): it resolves by position, in the rings and from before a break alike."""
    topics = Topics(Settings())
    items = [Sequenced(p, str(p), ("a",), b"data: %d\n\n" % p, 0.0) for p in (10, 11)]
    items.append(Sequenced(12, "mine", ("a",), b"data: 12\n\n", 0.0))
    assert topics.store(items, 0, 0.0, {}, []) == (3, None)
    (topic,) = topics.by_name.values()
    assert topic.ring.resume("10") is None and topic.ring.resume("mine") == 3
    assert resume.resolve([topic], "10", 5, 12) == (resume.RESUMED, {topic: 1})
    assert resume.resolve([topic], "11", 5, 12) == (resume.RESUMED, {topic: 2})
    assert resume.resolve([topic], "mine", 5, 12) == (resume.RESUMED, {topic: 3})
    # the sequence rejoined at 50: ids in the ring from before it are evicted, others unknown
    assert resume.resolve([topic], "10", 50, 60)[0] == resume.EVICTED
    assert resume.resolve([topic], "9", 50, 60)[0] == resume.UNKNOWN


def test_an_id_given_to_two_events_of_the_streams_topics_is_unknown() -> None:
    """Publisher ids are unique within a batch only: one reused in two topics of a
    stream names two positions, and which one the client holds cannot be told. The
    resume says ``unknown`` (``ambiguous``) rather than guess and maybe skip; one
    event published to both topics is one position: resumed."""

    async def main() -> None:
        app = make_app()
        publish(app, "a", "first", id="dup")
        publish(app, "b", "between")
        publish(app, "b", "second", id="dup")
        publish(app, ["a", "b"], "both", id="shared")
        publish(app, "a", "after")
        query = [("topic", "a"), ("topic", "b")]
        stream = Stream(app, query=query, headers={"last-event-id": "dup"}).start()
        await settle()
        assert stream.headers["sse-fast-resume"] == "unknown"
        missed = json.loads(stream.events[0].data)
        assert missed["reason"] == "unknown" and missed["ambiguous"] is True
        stream.disconnect()
        await stream.finished()
        stream = Stream(app, query=query, headers={"last-event-id": "shared"}).start()
        await settle()
        assert stream.headers["sse-fast-resume"] == "resumed"
        assert stream.data() == ["after"]
        stream.disconnect()
        await stream.finished()

    run(main())
