"""Routing: endpoints, methods, unknown paths."""

from __future__ import annotations

import pytest

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
    from sse_fast.app._routing import ROUTES

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


def test_a_native_core_that_did_not_load_is_said_at_startup(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Running on the pure-Python twins by accident (a stale build) is several times
    slower: the worker's log says so, and what to do; ``/stats`` says ``native_core``."""
    import asyncio
    import logging

    from sse_fast import HAS_EXTENSIONS
    from sse_fast.app import App
    from sse_fast.app import _lifespan as lifespan
    from sse_fast.settings import Settings

    async def main(app: App) -> None:
        async with app.running():
            assert app.hub.stats()["native_core"] is HAS_EXTENSIONS

    caplog.set_level(logging.WARNING, "sse_fast")
    asyncio.run(main(App(Settings())))
    assert "native core" not in caplog.text or not HAS_EXTENSIONS
    caplog.clear()
    problem = ImportError("cannot import name 'ack_lines' from 'sse_fast._core.publish_ext'")
    monkeypatch.setattr(lifespan, "EXTENSION_IMPORT_ERROR", problem)
    asyncio.run(main(App(Settings())))
    assert "the native core did not load (cannot import name 'ack_lines'" in caplog.text
    assert "pip install -e ." in caplog.text
