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


def test_every_route_in_the_table_is_served_and_nothing_else() -> None:
    """ROUTES (the HTTP reference's source) is what the app serves: each path is
    found with its method and refused with 405 naming it under another; the 404
    lists them all."""
    from sse_fast.app.routing import ROUTES

    async def main() -> None:
        app = make_app(ops_networks="0.0.0.0/0,::/0")
        for route in ROUTES:
            other = "DELETE"
            code, headers, _ = await request(app, other, route.path)
            assert code == 405 and headers["allow"] == route.method, route
            if route.method == "GET" and route.path != "/events":  # /events streams
                code, _, body = await request(app, "GET", route.path)
                assert code != 404 or b"no such endpoint" not in body, (route, body)
        code, _, body = await request(app, "GET", "/nowhere")
        assert code == 404
        for route in ROUTES:
            assert route.path.encode() in body
        assert {route.path for route in ROUTES} - {"/events"} == set(app._routes)

    run(main())
