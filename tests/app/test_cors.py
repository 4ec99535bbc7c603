"""CORS: preflights and response headers for allowed origins only."""

from __future__ import annotations

from ..support.asgi_harness import Stream, request, settle
from ..support.security_harness import make_app, run


def test_cors_preflight_and_headers() -> None:
    async def main() -> None:
        app = make_app(cors_origins="https://app.example", allow_anonymous_publish=True)
        code, headers, _ = await request(
            app, "OPTIONS", "/publish", headers={"origin": "https://app.example"}
        )
        assert code == 204
        assert headers["access-control-allow-origin"] == "https://app.example"
        assert headers["access-control-allow-credentials"] == "true"
        assert "POST" in headers["access-control-allow-methods"]
        assert "Authorization" in headers["access-control-allow-headers"]
        code, headers, _ = await request(
            app, "OPTIONS", "/publish", headers={"origin": "https://evil.example"}
        )
        assert code == 403 and "access-control-allow-origin" not in headers
        code, headers, _ = await request(
            app,
            "POST",
            "/publish",
            b'{"topic":"a","data":1}',
            headers={"origin": "https://app.example"},
        )
        assert code == 200 and headers["access-control-allow-origin"] == "https://app.example"
        stream = Stream(
            app, query=[("topic", "a")], headers={"origin": "https://evil.example"}
        ).start()
        await settle()
        assert "access-control-allow-origin" not in stream.headers
        stream.disconnect()
        await stream.finished()
        no_cors = make_app(allow_anonymous_publish=True)
        code, headers, _ = await request(
            no_cors, "OPTIONS", "/publish", headers={"origin": "https://app.example"}
        )
        assert code == 403  # none allowed by default

    run(main())
