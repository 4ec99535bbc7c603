"""Admission: connection limits, connect and publish rates, client addresses
behind trusted proxies."""

from __future__ import annotations

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
