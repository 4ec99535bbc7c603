"""Routing: endpoints, methods, unknown paths."""

from __future__ import annotations

from ..support.asgi_harness import make_app, request, run


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
