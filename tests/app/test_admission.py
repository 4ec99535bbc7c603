"""Admission: connection limits, connect and publish rates, client addresses
behind trusted proxies."""

from __future__ import annotations

import pytest

from sse_fast.app.admission import TokenBucket

from ..support.asgi_harness import Stream, settle
from ..support.security_harness import make_app, publish, run, token


def test_publish_rate_limit_per_credential() -> None:
    async def main() -> None:
        app = make_app(publish_rate=2)
        auth = f"Bearer {token({'publish': ['*']})}"
        codes = [(await publish(app, {"topic": "a", "data": i}, auth)) for i in range(6)]
        assert [c[0] for c in codes[:4]] == [200] * 4  # burst of 2 x rate
        assert codes[4][0] == 429 and int(codes[4][1]["retry-after"]) >= 1
        assert 'reason="publish_rate"' in app.operations.render_metrics()

    run(main())


def test_connection_limits_total_per_ip_and_rate() -> None:
    async def main() -> None:
        app = make_app(max_connections=3, max_connections_per_ip=2, connect_rate_per_ip=0)
        first = [Stream(app, query=[("topic", "a")]).start() for _ in range(2)]
        await settle()
        third = Stream(app, query=[("topic", "a")]).start()
        await settle()
        assert third.status == 429 and third.headers["retry-after"] == "5"
        other = Stream(app, query=[("topic", "a")])
        other.scope["client"] = ("10.0.0.9", 1)  # another address still gets in
        other.start()
        await settle()
        assert other.status == 200
        assert app.admission.streams_by_ip == {"127.0.0.1": 2, "10.0.0.9": 1}
        for s in [*first, other]:
            s.disconnect()
            await s.finished()
        await third.finished()
        assert app.admission.streams_by_ip == {}
        limited = make_app(max_connections=1, max_connections_per_ip=0, connect_rate_per_ip=0)
        one = Stream(limited, query=[("topic", "a")]).start()
        await settle()
        two = Stream(limited, query=[("topic", "a")]).start()
        await settle()
        assert two.status == 503 and two.headers["retry-after"] == "5"
        one.disconnect()
        await one.finished()
        rated = make_app(connect_rate_per_ip=1, max_connections_per_ip=0)
        codes = []
        for _ in range(4):
            s = Stream(rated, query=[("topic", "a")]).start()
            await settle()
            codes.append(s.status)
            if s.status == 200:
                s.disconnect()
            await s.finished()
        assert codes == [200, 200, 429, 429]
        assert 'reason="connect_rate"' in rated.operations.render_metrics()

    run(main())


def test_trusted_proxy_forwarded_for() -> None:
    app = make_app(trusted_proxies="10.0.0.1")
    scope = {"client": ("10.0.0.1", 5), "headers": [(b"x-forwarded-for", b"1.2.3.4, 10.0.0.1")]}
    assert app.client_address(scope) == "1.2.3.4"
    untrusted = {"client": ("9.9.9.9", 5), "headers": [(b"x-forwarded-for", b"1.2.3.4")]}
    assert app.client_address(untrusted) == "9.9.9.9"  # spoofed header from a non-proxy ignored


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=2, clock=lambda: now[0])
    assert [bucket.take("k") for _ in range(2)] == [0.0, 0.0]
    assert bucket.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take("k") == 0.0
    assert bucket.take("other") == 0.0
