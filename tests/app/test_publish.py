"""``POST /publish`` in process: bodies, limits, ids, whole batches."""

from __future__ import annotations

import json

import orjson
import pytest

from sse_fast.hub import Hub, PublishError, PublishRequest
from sse_fast.settings import Settings

from ..support.asgi_harness import Stream, make_app, publish, request, run, settle


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
        before = app.hub.last_position
        code, _headers, response = await request(app, "POST", "/publish", body)
        assert code == status
        assert fragment in json.loads(response)["error"]
        assert app.hub.last_position == before and app.hub.metrics.published_total == 0

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
    assert hub.metrics.published_total == 0 and "a" not in hub.topics.by_name
