"""Auth: publisher and subscriber credentials (static token, HS256, public
keys), claims and private topics, token expiry, claim patterns (properties),
and the safe default of a real ``sse-fast serve``."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import example, given
from hypothesis import strategies as st

from sse_fast._patterns import meets
from sse_fast.app import App
from sse_fast.app._auth import matches, presence_warnings
from sse_fast.settings import Settings, SettingsError
from sse_fast.testing import ServerProcess, free_port

from ..support.asgi_harness import Stream, settle
from ..support.security_harness import SECRET, WallClock, make_app, publish, run, token

# ---------------------------------------------------------------- publishers


def test_publishing_needs_a_credential_by_default() -> None:
    async def main() -> None:
        app = App(Settings())  # nothing configured at all
        status, headers, body = await publish(app, {"topic": "a", "data": 1})
        assert status == 401 and "none is configured" in body["error"]
        assert headers["www-authenticate"].startswith("Bearer")
        app = make_app()
        status, _, body = await publish(app, {"topic": "a", "data": 1})
        assert status == 401 and "Authorization: Bearer" in body["error"]
        assert app.hub.metrics.published_total == 0

    run(main())


@pytest.mark.parametrize(
    ("rights", "topic", "status"),
    [
        ({"publish": ["news"]}, "news", 200),
        ({"publish": ["news"]}, "sports", 403),
        ({"publish": ["user/*"]}, "user/42/inbox", 200),
        ({"publish": ["user/*"]}, "users", 403),
        ({"publish": ["*"]}, "anything", 200),
        ({"subscribe": ["*"]}, "news", 403),
        ({}, "news", 403),
    ],
)
def test_publish_claims(rights: dict, topic: str, status: int) -> None:
    async def main() -> None:
        app = make_app()
        code, _, body = await publish(app, {"topic": topic, "data": 1}, f"Bearer {token(rights)}")
        assert code == status, body
        if status == 403:
            assert topic in body["error"] and app.hub.metrics.published_total == 0

    run(main())


def test_a_batch_with_one_forbidden_topic_publishes_nothing() -> None:
    async def main() -> None:
        app = make_app()
        code, _, _ = await publish(
            app,
            {"events": [{"topic": "ok", "data": 1}, {"topic": "secret", "data": 2}]},
            f"Bearer {token({'publish': ['ok']})}",
        )
        assert code == 403 and app.hub.metrics.published_total == 0

    run(main())


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        ("Basic abc", "Bearer <token>"),
        ("Bearer not.a.jwt", "invalid token"),
        (
            f"Bearer {token({'publish': ['*']}, key='another-secret-of-enough-length-xx')}",
            "invalid token",
        ),
        (f"Bearer {token({'publish': ['*']}, exp=int(time.time()) - 60)}", "expired"),
        (f"Bearer {token({'publish': 'news'}, aud='other')}", "invalid token"),
        (f"Bearer {jwt.encode({'sse_fast': {'publish': 5}}, SECRET)}", "list of topic patterns"),
    ],
    # ids that do not change from one collection to the next (pytest-xdist compares them)
    ids=["basic", "not-a-jwt", "other-key", "expired", "other-audience", "bad-claim"],
)
def test_bad_publisher_tokens_get_401(auth: str, fragment: str) -> None:
    async def main() -> None:
        app = make_app()
        code, _, body = await publish(app, {"topic": "news", "data": 1}, auth)
        assert code == 401 and fragment in body["error"], body

    run(main())


def test_static_token_and_anonymous_opt_out() -> None:
    async def main() -> None:
        app = App(Settings(publish_token="s3cret-token"))
        assert (await publish(app, {"topic": "a", "data": 1}, "Bearer s3cret-token"))[0] == 200
        assert (await publish(app, {"topic": "a", "data": 1}, "Bearer wrong"))[0] == 401
        app = App(Settings(allow_anonymous_publish=True))
        assert (await publish(app, {"topic": "a", "data": 1}))[0] == 200

    run(main())


@pytest.mark.parametrize("kind", ["rsa", "ec", "jwks"])
def test_public_key_tokens(kind: str, tmp_path: Any) -> None:
    if kind == "ec":
        private: Any = ec.generate_private_key(ec.SECP256R1())
        algorithm = "ES256"
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        algorithm = "RS256"
    public = private.public_key()
    settings: dict[str, Any] = {}
    if kind == "jwks":
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps({"keys": [jwk]}))
        settings["jwt_jwks_file"] = str(path)
    else:
        path = tmp_path / "key.pem"
        path.write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        settings["jwt_public_key_file"] = str(path)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    async def main() -> None:
        app = App(Settings(**settings))
        good = jwt.encode(
            {"sse_fast": {"publish": ["a"]}}, pem, algorithm=algorithm, headers={"kid": "k1"}
        )
        assert (await publish(app, {"topic": "a", "data": 1}, f"Bearer {good}"))[0] == 200
        forged = token({"publish": ["a"]})  # HS256 with a secret the server does not have
        assert (await publish(app, {"topic": "a", "data": 1}, f"Bearer {forged}"))[0] == 401

    run(main())


# ---------------------------------------------------------------- subscribers


def test_private_topics_need_subscribe_claims() -> None:
    async def main() -> None:
        app = make_app(private_topics="user/*,admin")
        cases = [
            ({}, [("topic", "public")], 200),
            ({}, [("topic", "user/1")], 401),
            (
                {"authorization": f"Bearer {token({'subscribe': ['user/1']})}"},
                [("topic", "user/1")],
                200,
            ),
            (
                {"authorization": f"Bearer {token({'subscribe': ['user/1']})}"},
                [("topic", "user/1"), ("topic", "admin")],
                403,
            ),
            (
                {"cookie": f"other=1; sse_fast_token={token({'subscribe': ['user/*']})}"},
                [("topic", "user/9")],
                200,
            ),
            ({}, [("topic", "user/1"), ("token", token({"subscribe": ["user/1"]}))], 401),
            ({"authorization": "Bearer garbage"}, [("topic", "public")], 401),
        ]
        for headers, query, status in cases:
            stream = Stream(app, query=query, headers=headers).start()
            await settle()
            assert stream.status == status, (headers, query)
            if status == 200:
                stream.disconnect()
            await stream.finished()

    run(main())


def test_query_token_only_when_allowed() -> None:
    async def main() -> None:
        app = make_app(private_topics="p", allow_query_token=True)
        stream = Stream(app, query=[("topic", "p"), ("token", token({"subscribe": ["p"]}))])
        stream.start()
        await settle()
        assert stream.status == 200
        stream.disconnect()
        await stream.finished()

    run(main())


def test_token_expiry_ends_the_stream_with_a_reason() -> None:
    async def main() -> None:
        clock = WallClock()
        app = make_app(clock, private_topics="p")
        expiring = token({"subscribe": ["p"]}, exp=int(clock.now) + 1)
        clock.now += 0.999  # the token expires in a millisecond
        stream = Stream(
            app, query=[("topic", "p")], headers={"authorization": f"Bearer {expiring}"}
        ).start()
        await settle()
        assert stream.status == 200
        await stream.finished(timeout=5)
        assert stream.ended
        assert stream.events[-1].event == "sse-fast-disconnect"
        assert json.loads(stream.events[-1].data) == {"reason": "token-expired"}
        assert app.hub.subscriptions == {}

    run(main())


def _status(app: App, topic: str, rights: dict[str, Any] | None = None) -> Any:
    """The status of a stream opened on ``topic`` (with a token of ``rights``)."""

    async def main() -> tuple[int | None, bytes]:
        headers = {"authorization": f"Bearer {token(rights)}"} if rights is not None else {}
        stream = Stream(app, query=[("topic", topic)], headers=headers).start()
        await settle()
        if stream.status == 200:
            stream.disconnect()
        await stream.finished()
        return stream.status, bytes(stream.raw)

    return run(main())


def test_a_private_topics_presence_is_private() -> None:
    """Issue 39: ``user/2/inbox`` private and tracked, its ``user/2/inbox/presence`` was open
    to anyone (who subscribes to an inbox, named by subject)."""
    app = make_app(private_topics="user/*/inbox", presence_topics="user/*/inbox")
    assert app.auth.is_private("user/2/inbox/presence")
    assert _status(app, "user/2/inbox/presence")[0] == 401
    assert _status(app, "user/2/inbox/presence", {"subscribe": ["user/2/inbox"]})[0] == 200
    assert _status(app, "user/2/inbox/presence", {"subscribe": ["user/3/inbox"]})[0] == 403
    assert _status(app, "user/2/inbox/presence", {"subscribe": ["user/2/*"]})[0] == 200
    # only a companion inherits, and only from a private topic
    assert _status(app, "user/2/outbox/presence")[0] == 200
    assert _status(app, "user/2/inbox/presence/presence")[0] == 200
    assert _status(app, "/presence")[0] == 200
    # deliberately public, as configured
    public = make_app(
        private_topics="user/*/inbox",
        presence_topics="user/*/inbox",
        public_presence_topics="user/1/*",
    )
    assert _status(public, "user/1/inbox/presence")[0] == 200
    assert _status(public, "user/2/inbox/presence")[0] == 401
    # a companion made private by name (the old advice): no right comes from its public topic
    by_name = make_app(private_topics="room:*/presence", presence_topics="room:*")
    assert _status(by_name, "room:1/presence", {"subscribe": ["room:1"]})[0] == 403
    assert _status(by_name, "room:1/presence", {"subscribe": ["room:1/presence"]})[0] == 200
    # the option wins over a private pattern that covers the companion's name too
    named_public = make_app(private_topics="room:*", public_presence_topics="room:*")
    assert _status(named_public, "room:1/presence")[0] == 200
    assert _status(named_public, "room:1")[0] == 401


def test_presence_warnings_name_what_is_exposed() -> None:
    def warnings(**values: Any) -> list[str]:
        settings = Settings(**values)
        return presence_warnings(settings.access, settings.features)

    assert warnings(private_topics="user/*", presence_topics="user/*") == []
    assert warnings(public_presence_topics="room:*", presence_topics="room:*") == []
    assert (
        warnings(  # public presence of topics that are tracked but not private
            public_presence_topics="room:*", private_topics="user/*", presence_topics="room:*"
        )
        == []
    )
    (warning,) = warnings(
        public_presence_topics="user/1/*",
        private_topics="user/*/inbox,admin",
        presence_topics="*/inbox",
    )
    assert "public_presence_topics 'user/1/*'" in warning and "(user/*/inbox)" in warning


# ---------------------------------------------------------------- CORS


# ---------------------------------------------------------------- limits


# ---------------------------------------------------------------- claim patterns


@pytest.mark.parametrize("claim", ["subscribe", "publish"])
def test_a_grant_with_a_character_class_is_refused(claim: str) -> None:
    """Issue 39: ``user/[12]/*`` granted ``user/2/...`` (``fnmatch``'s classes); the docs
    know ``*`` and ``?`` only. The token is refused, saying why."""
    app = make_app(private_topics="user/*")
    rights = {claim: ["user/[12]/*"], "subscribe": ["user/[12]/*"]}
    status, body = _status(app, "user/2/inbox", rights)
    assert status == 401, body
    error = json.loads(body)["error"]
    assert f"claim sse_fast.{claim}" in error or "claim sse_fast.subscribe" in error
    assert "'['" in error and "only * " in error, error
    code, _, answer = run(publish(app, {"topic": "user/2/x", "data": 1}, f"Bearer {token(rights)}"))
    assert code == 401 and "'['" in answer["error"], answer


names = st.text(alphabet="ab/.-", min_size=1, max_size=8)


@given(topic=names, pattern=st.text(alphabet="ab/.-*?[]!", min_size=1, max_size=8))
@example(topic="b/a", pattern="[ab]/*")  # a class to fnmatch: literal here
@example(topic="a", pattern="[!b]")
def test_pattern_matching_property(topic: str, pattern: str) -> None:
    """``*`` and ``?`` are the only wildcards: ``[``, ``]`` and ``!`` are literal."""
    import re

    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    expected = re.fullmatch(regex, topic, re.DOTALL) is not None
    assert matches(topic, [pattern]) == expected


@given(patterns=st.lists(st.text(alphabet="ab*?", max_size=3), min_size=1, max_size=3))
def test_meets_is_some_topic_matching_every_pattern(patterns: list[str]) -> None:
    """``meets`` against every name of up to the patterns' total length (the shortest
    common match is no longer) over a, b and one other character."""
    longest = sum(len(p) for p in patterns)
    candidates = [
        "".join(t) for n in range(longest + 1) for t in itertools.product("abc", repeat=n)
    ]
    expected = any(all(matches(t, [p]) for p in patterns) for t in candidates)
    assert meets(patterns[0], tuple(patterns[1:])) == expected


def test_long_patterns_meet_or_not_exactly_and_at_once() -> None:
    """Long patterns are walked, not assumed to meet (these two never do: one ends in
    b, the other in c), at work in the second's length (a start-up check, a webhook's
    match of a pattern stream, cannot take seconds)."""
    assert not meets("a*" * 400 + "b", ("*a" * 400 + "c",))
    assert meets("a*" * 400 + "b", ("*a" * 400 + "*",))


@pytest.mark.processes("sse-fast serve as started, with its defaults and its refusal to start")
def test_a_pattern_setting_with_a_character_class_stops_serve() -> None:
    """``sse-fast serve --private-topics 'user/[12]/*'`` exits 2 with one line."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sse_fast", "serve", "--port", str(free_port())),
            *("--private-topics", "user/[12]/*,admin"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("sse-fast: private_topics: pattern 'user/[12]/*' has '['"), line
    for name in ("presence_topics", "public_presence_topics", "webhook_topics"):
        with pytest.raises(SettingsError, match=rf"^{name}: pattern 'a\[b\]\*' has '\['"):
            Settings(**dict[str, Any]({name: "a[b]*"}))


@given(topic=names, other=names)
def test_exact_patterns_match_only_themselves(topic: str, other: str) -> None:
    assert matches(topic, [topic])
    assert matches(topic, [other]) == (topic == other)
    assert matches(topic, ["*"])
    assert not matches(topic, [])


# ---------------------------------------------------------------- real server


@pytest.mark.processes("sse-fast serve as started, with its defaults and its refusal to start")
def test_fresh_server_is_safe_by_default() -> None:
    with ServerProcess(allow_anonymous_publish="0") as server:

        async def main() -> None:
            code, _, body = await server.publish(b'{"topic":"a","data":1}')
            assert code == 401
            assert "Authorization" in json.loads(body)["error"]

        asyncio.run(main())
        assert "no publish credential configured" in server.output()


@pytest.mark.processes("sse-fast serve as started, with its defaults and its refusal to start")
def test_serve_keeps_a_private_topics_presence_private() -> None:
    """The probe's case against a real server; and the warning when made public."""
    with ServerProcess(
        "--private-topics", "user/*/inbox", "--presence-topics", "user/*/inbox"
    ) as server:

        async def main() -> list[int]:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                codes = []
                for topic in ("user/2/inbox", "user/2/inbox/presence"):
                    async with client.stream("GET", "/events", params={"topic": topic}) as answer:
                        codes.append(answer.status_code)
                return codes

        assert asyncio.run(main()) == [401, 401]
        assert "public_presence_topics" not in server.output()
    with ServerProcess(
        "--private-topics",
        "user/*/inbox",
        "--presence-topics",
        "user/*/inbox",
        "--public-presence-topics",
        "user/*",
    ) as server:
        output = server.output()  # said before the workers start
    assert "WARNING" in output
    assert "public_presence_topics 'user/*': the presence of private topics" in output


def test_a_decoded_token_is_reused_only_until_it_expires() -> None:
    """Publishers send the same JWT on every request: it is verified once, then
    taken from a cache, but never past its expiry (plus the 5 s leeway)."""
    from sse_fast.app._auth import JWT_LEEWAY, Authenticator

    clock = WallClock()
    auth = Authenticator(Settings(jwt_secret=SECRET), clock)
    exp = int(clock.now) - JWT_LEEWAY + 1  # past, but within the leeway for 1 s more
    expiring = jwt.encode({"exp": exp, "sse_fast": {"publish": ["a"]}}, SECRET, algorithm="HS256")
    first = auth.publisher(f"Bearer {expiring}")
    assert auth.publisher(f"Bearer {expiring}") is first  # cached, not decoded again
    clock.now += 0.99
    assert auth.publisher(f"Bearer {expiring}") is first  # the leeway's last moment
    clock.now += 0.01  # now exp + leeway: refused, the cached credential too
    with pytest.raises(Exception) as info:
        auth.publisher(f"Bearer {expiring}")
    assert getattr(info.value, "status", None) == 401 and "expired" in str(info.value)
    # a tampered token is never taken from the cache for a valid one
    valid = jwt.encode({"sse_fast": {"publish": ["a"]}}, SECRET, algorithm="HS256")
    auth.publisher(f"Bearer {valid}")
    with pytest.raises(Exception) as info:
        auth.publisher(f"Bearer {valid[:-2]}xx")
    assert getattr(info.value, "status", None) == 401


@pytest.mark.parametrize(
    "form", ["integer", "float", "numeric string"], ids=["integer", "float", "string"]
)
def test_every_exp_form_pyjwt_accepts_expires(form: str) -> None:
    """PyJWT reads int(exp): a float or a numeric string is as good as an integer, so
    each ends its streams when it passes and stops publishing past the leeway, on the
    app's wall clock (moved here, not waited for)."""
    clock = WallClock()
    at = int(clock.now) + 60
    exp: Any = {"integer": at, "float": at + 0.25, "numeric string": str(at)}[form]

    async def main() -> None:
        app = make_app(clock, private_topics="p")
        bearer = f"Bearer {token({'subscribe': ['p'], 'publish': ['p']}, exp=exp)}"
        assert (await publish(app, {"topic": "p", "data": "before"}, bearer))[0] == 200
        clock.now = at - 0.001  # a stream opened now ends in a millisecond
        stream = Stream(app, query=[("topic", "p")], headers={"authorization": bearer}).start()
        await stream.finished(timeout=5)
        assert stream.status == 200
        assert stream.data() == ['{"reason":"token-expired"}']
        assert stream.events[-1].event == "sse-fast-disconnect"
        clock.now = at + 4.9  # within the leeway: still publishes (a cached credential)
        assert (await publish(app, {"topic": "p", "data": "late"}, bearer))[0] == 200
        clock.now = at + 5
        status, _, body = await publish(app, {"topic": "p", "data": "after"}, bearer)
        assert status == 401 and "expired" in body["error"]

    run(main())


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_not_valid_yet_is_refused_until_its_time(claim: str) -> None:
    """``nbf`` and ``iat`` in the future (beyond the 5 s leeway) are refused, as
    PyJWT would; from that moment on the app's clock the token is good."""
    clock = WallClock()
    bearer = f"Bearer {token({'publish': ['*']}, **{claim: int(clock.now) + 60})}"
    app = make_app(clock)
    body = {"topic": "news", "data": 1}
    status, _, answer = run(publish(app, body, bearer))
    assert status == 401 and f"not valid yet ({claim} is in the future)" in answer["error"]
    clock.now += 55  # 5 s ahead: the leeway covers it
    assert run(publish(app, body, bearer))[0] == 200


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_time_claim_pyjwt_refuses_is_refused(claim: str) -> None:
    bearer = f"Bearer {token({'publish': ['*']}, **{claim: 'soon'})}"
    status, _, answer = run(publish(make_app(), {"topic": "news", "data": 1}, bearer))
    assert status == 401 and f"claim '{claim}' must be an integer" in answer["error"]


@pytest.mark.parametrize(
    "key",
    [
        {"jwt_secret": "a-secret-of-32-characters-or-more"},
        {"jwt_public_key_file": "/nonexistent.pem"},
        {"jwt_jwks_file": "/nonexistent.json"},
    ],
    ids=["secret", "public key", "jwks"],
)
def test_a_jwt_key_without_pyjwt_is_refused_naming_the_extra(
    key: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each way of giving a JWT key, where PyJWT is not installed (the core install):
    the settings are refused saying what to install, before any file is read, and
    without a key nothing asks for PyJWT at all."""
    from sse_fast.app._auth import Authenticator

    monkeypatch.setitem(sys.modules, "jwt", None)  # import jwt: ImportError
    with pytest.raises(SettingsError, match=r"pip install 'sse_fast\[server\]'"):
        Settings(**key)
    Authenticator(Settings(publish_token="a-token"))  # no key: no PyJWT needed
