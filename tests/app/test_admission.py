"""Admission: connection limits, connect and publish rates, client addresses
behind trusted proxies."""

from __future__ import annotations

import json

import pytest

from sse_fast.app._admission import TokenBucket
from sse_fast.settings import Settings, SettingsError

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


def told_to_come_back(stream: Stream) -> tuple[str, str, int]:
    """The reason, message and retry of a stream told to come back later: a 200 with
    the ``SSE-Fast-Come-Back`` header and one ``sse-fast-disconnect`` frame, ended."""
    assert stream.status == 200 and stream.ended
    assert stream.headers["content-type"].startswith("text/event-stream")
    (event,) = stream.events
    assert event.event == "sse-fast-disconnect" and not event.id
    data = json.loads(event.data)
    assert stream.headers["sse-fast-come-back"] == data["reason"]
    assert stream.parser.retry is not None
    return data["reason"], data["message"], stream.parser.retry


def test_connection_limits_total_per_ip_and_rate() -> None:
    """A stream over a limit is told to come back after the wait the limit names (a
    browser's EventSource would stop for good on the 429 or 503 these were), counted
    as refused by the limit; it holds no slot."""

    async def main() -> None:
        app = make_app(max_connections=3, max_connections_per_ip=2, connect_rate_per_ip=0)
        first = [Stream(app, query=[("topic", "a")]).start() for _ in range(2)]
        await settle()
        third = Stream(app, query=[("topic", "a")]).start()
        await settle()
        reason, message, retry = told_to_come_back(third)
        assert reason == "max-connections-per-ip"
        assert message == "too many streams from 127.0.0.1 (max_connections_per_ip 2)"
        assert 5000 <= retry <= 5000 + app.settings.drain_retry_jitter_ms  # Retry-After 5
        other = Stream(app, query=[("topic", "a")])
        other.scope["client"] = ("10.0.0.9", 1)  # another address still gets in
        other.start()
        await settle()
        assert other.status == 200 and not other.ended
        assert app.admission.streams_by_ip == {"127.0.0.1": 2, "10.0.0.9": 1}
        for s in [*first, other]:
            s.disconnect()
            await s.finished()
        await third.finished()
        assert app.admission.streams_by_ip == {}
        assert 'reason="max_connections_per_ip"} 1' in app.operations.render_metrics()
        limited = make_app(max_connections=1, max_connections_per_ip=0, connect_rate_per_ip=0)
        one = Stream(limited, query=[("topic", "a")]).start()
        await settle()
        two = Stream(limited, query=[("topic", "a")]).start()
        await settle()
        reason, message, retry = told_to_come_back(two)
        assert (reason, message) == (
            "max-connections",
            "connection limit reached (1 streams on this worker); retry later",
        )
        assert retry >= 5000
        one.disconnect()
        await one.finished()
        assert 'reason="max_connections"} 1' in limited.operations.render_metrics()
        rated = make_app(connect_rate_per_ip=1, max_connections_per_ip=0, retry_ms=1500)
        told = []
        for _ in range(4):
            s = Stream(rated, query=[("topic", "a")]).start()
            await settle()
            if s.ended:
                told.append(told_to_come_back(s))
            else:
                assert s.status == 200
                s.disconnect()
            await s.finished()
        assert [reason for reason, _, _ in told] == ["connect-rate", "connect-rate"]
        assert all(retry >= 1500 for _, _, retry in told)  # retry_ms, over the 1 s wait
        assert told[0][1] == "too many connection attempts from 127.0.0.1; slow down"
        assert 'reason="connect_rate"} 2' in rated.operations.render_metrics()

    run(main())


def test_a_refusal_retrying_cannot_fix_keeps_its_status() -> None:
    async def main() -> None:
        app = make_app(max_connections=1)
        bad = Stream(app, query=[("topic", "a b")]).start()
        await settle()
        await bad.finished()
        assert bad.status == 400 and "sse-fast-come-back" not in bad.headers

    run(main())


def test_trusted_proxy_forwarded_for() -> None:
    app = make_app(trusted_proxies="10.0.0.1")
    scope = {"client": ("10.0.0.1", 5), "headers": [(b"x-forwarded-for", b"1.2.3.4, 10.0.0.1")]}
    assert app.client_address(scope) == "1.2.3.4"
    untrusted = {"client": ("9.9.9.9", 5), "headers": [(b"x-forwarded-for", b"1.2.3.4")]}
    assert app.client_address(untrusted) == "9.9.9.9"  # spoofed header from a non-proxy ignored


#: (forwarded_header, peer, header lines, client) with trusted_proxies 10.0.0.1,10.1.0.0/16
CLIENTS = [
    # every line read, right to left: a client's own line before the proxy's is not the client
    ("x-forwarded-for", "10.0.0.1", ["127.0.0.1", "8.8.8.8"], "8.8.8.8"),
    ("x-forwarded-for", "10.0.0.1", ["8.8.8.8"], "8.8.8.8"),
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4, 10.1.2.3", "10.0.0.1"], "1.2.3.4"),
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4", "5.6.7.8, 10.1.9.9"], "5.6.7.8"),
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4,,  , 10.1.0.7"], "1.2.3.4"),  # empty items
    # ports, brackets, IPv4-mapped IPv6, IPv6: one spelling per address
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4:5678"], "1.2.3.4"),
    ("x-forwarded-for", "10.0.0.1", ["2001:DB8::1"], "2001:db8::1"),
    ("x-forwarded-for", "10.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4, [::ffff:10.1.0.1]:80"], "1.2.3.4"),
    ("x-forwarded-for", "::ffff:10.0.0.1", ["1.2.3.4"], "1.2.3.4"),  # mapped peer trusted
    # every hop trusted: the leftmost (a request from a proxy's own machine)
    ("x-forwarded-for", "10.0.0.1", ["10.1.0.5, 10.0.0.1"], "10.1.0.5"),
    # no address: the walk ends, the client is "unknown" whatever was written
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4, <script>"], "unknown"),
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4, 999.1.1.1"], "unknown"),
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4, [::1"], "unknown"),
    ("x-forwarded-for", "10.0.0.1", ["1.2.3.4, unknown, 10.1.0.1"], "unknown"),
    ("x-forwarded-for", "10.0.0.1", [""], "10.0.0.1"),  # no hop: the peer
    # untrusted peer: headers ignored
    ("x-forwarded-for", "9.9.9.9", ["1.2.3.4"], "9.9.9.9"),
    # the other header is never read: the proxy writes one, the client the other
    ("x-forwarded-for", "10.0.0.1", [], "10.0.0.1"),
    # RFC 7239: several elements per line, quoted IPv6 with a port, obfuscated ids
    ("forwarded", "10.0.0.1", ["for=127.0.0.1", "for=8.8.8.8"], "8.8.8.8"),
    (
        "forwarded",
        "10.0.0.1",
        ['for=1.2.3.4;proto=https, For="[2001:db8::17]:4711"'],
        "2001:db8::17",
    ),
    ("forwarded", "10.0.0.1", ["for=1.2.3.4;by=10.0.0.1, for=10.1.0.2;proto=http"], "1.2.3.4"),
    ("forwarded", "10.0.0.1", ['for="10.1.0.2:80"', "for=10.0.0.1"], "10.1.0.2"),
    ("forwarded", "10.0.0.1", ["for=1.2.3.4, for=_proxy-b.7"], "_proxy-b.7"),
    ("forwarded", "10.0.0.1", ["for=1.2.3.4, for=unknown"], "unknown"),
    ("forwarded", "10.0.0.1", ["for=1.2.3.4, proto=https"], "unknown"),  # no for=
    ("forwarded", "10.0.0.1", ["for=1.2.3.4, for=5.6.7.8;for=9.9.9.9"], "unknown"),
    ("forwarded", "10.0.0.1", ['for=1.2.3.4, for="5.6.7.8'], "unknown"),  # unclosed quote
    ("forwarded", "10.0.0.1", ['for=1.2.3.4, for="a,b;c", for=10.1.0.1'], "unknown"),
    ("forwarded", "10.0.0.1", ["for=1.2.3.4, garbage"], "unknown"),
    # a client's unclosed quote does not swallow what its proxy appended
    ("forwarded", "10.0.0.1", ['for="8.8.8.8', "for=203.0.113.5"], "203.0.113.5"),
    ("forwarded", "10.0.0.1", ['for="8.8.8.8, for=203.0.113.5'], "203.0.113.5"),
    ("forwarded", "10.0.0.1", ['for="8.8.8.8;x="a, for=203.0.113.5;proto=http'], "203.0.113.5"),
    ("forwarded", "10.0.0.1", ["for=1.2.3.4, for=[::1]"], "::1"),  # unquoted: lenient
]


@pytest.mark.parametrize(("kind", "peer", "lines", "client"), CLIENTS)
def test_client_address_behind_trusted_proxies(
    kind: str, peer: str, lines: list[str], client: str
) -> None:
    app = make_app(trusted_proxies="10.0.0.1, 10.1.0.0/16", forwarded_header=kind)
    name = kind.encode()
    other = b"forwarded" if kind == "x-forwarded-for" else b"x-forwarded-for"
    headers = [(other, b"for=127.0.0.1" if other == b"forwarded" else b"127.0.0.1")]
    headers += [(name, line.encode()) for line in lines]
    assert app.client_address({"client": (peer, 5), "headers": headers}) == client


def test_client_address_header_names_in_any_case() -> None:
    app = make_app(trusted_proxies="10.0.0.1")
    headers = [(b"X-Forwarded-For", b"127.0.0.1"), (b"x-forwarded-for", b"8.8.8.8")]
    assert app.client_address({"client": ("10.0.0.1", 5), "headers": headers}) == "8.8.8.8"


def test_trusted_proxies_and_forwarded_header_are_checked() -> None:
    with pytest.raises(SettingsError, match=r"trusted_proxies: '10\.0\.0\.300'.*10\.0\.0\.0/8"):
        Settings(trusted_proxies="10.0.0.1, 10.0.0.300")
    with pytest.raises(SettingsError, match="x-forwarded-for or forwarded"):
        Settings(forwarded_header="x-real-ip")


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=2, clock=lambda: now[0])
    assert [bucket.take("k") for _ in range(2)] == [0.0, 0.0]
    assert bucket.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take("k") == 0.0
    assert bucket.take("other") == 0.0
