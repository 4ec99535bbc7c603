"""Admission of subscription patterns at bounded cost (``_patterns.meets``, the
budgets of ``Authenticator.reach``): a pattern from anyone is first asked whether it
meets a private pattern at all, at work that does not grow with how the pattern was
built; containment walks only where it does, within a budget per pattern and per
request; a refused stream counts against its client's connect rate. In process: the
real-server check of the same (a worker's CPU per hostile request) is in
``tests/e2e/test_hostile_clients.py``."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sse_fast._companions import topic_of_companion
from sse_fast._patterns import Uncovered, matches, meets, uncovered
from sse_fast.app import _auth
from sse_fast.app._admission import REFUSAL_WEIGHT, TokenBucket
from sse_fast.app._auth import Authenticator, AuthError
from sse_fast.settings import Settings

from ..support.asgi_harness import Stream, settle
from ..support.security_harness import SECRET, make_app, run, token
from .test_containment import LETTERS, OTHER, TOPICS, _patterns

#: the outside probe's pattern: within the default length (200) and wildcard (4) limits
PROBE = "user/r1-0/*?" + "x" * 178 + "*?"
#: private patterns of the probe's two servers
ONE_PRIVATE = "user/*/inbox"
TWO_PRIVATE = "user/*/inbox,org/*/team/*/secret"


@pytest.mark.mode_independent  # sse_fast/_patterns.py: pure Python, no core
@settings(max_examples=300, deadline=None)
@given(_patterns(1, 4), st.lists(_patterns(1, 3), min_size=1, max_size=2))
@example("a*b", ["*"])
@example("**a", ["a**", "?"])
def test_meets_says_whether_a_topic_matches_every_pattern(pattern: str, others: list[str]) -> None:
    """``meets`` against brute force over every topic of up to the patterns' total
    length (no shortest common match is longer), over their letters and one more."""
    longest = len(pattern) + sum(len(o) for o in others)
    topics = [
        "".join(chars)
        for size in range(longest + 1)
        for chars in itertools.product(LETTERS + OTHER, repeat=size)
    ]
    expected = any(matches(t, [pattern]) and all(matches(t, [o]) for o in others) for t in topics)
    assert meets(pattern, tuple(others)) == expected


@settings(max_examples=300, deadline=None)
@given(
    _patterns().filter(lambda p: "*" in p or "?" in p),
    st.lists(_patterns(0, 3).filter(bool), min_size=1, max_size=2),
)
@example("a*", ["*/presence"])  # companions only: never reached by a pattern
@example("?", ["/presence"])
@example("a*?/presence", ["*"])
@example("*/presence", ["*"])
def test_an_anonymous_pattern_is_refused_exactly_when_it_reaches_a_private_topic(
    pattern: str, private: list[str]
) -> None:
    """Without a credential a pattern is refused (401) exactly when some topic it
    matches is private and no presence companion (a pattern never reaches one), by
    brute force over every topic of up to six characters (with ``/presence`` among
    the letters' topics through the examples)."""
    auth = Authenticator(Settings(private_topics=",".join(private), jwt_secret=SECRET))
    topics = [*TOPICS, *(t + "/presence" for t in ("", "a", "ab", "b/"))]
    breaking = [
        t
        for t in topics
        if matches(t, [pattern]) and topic_of_companion(t) is None and auth.is_private(t)
    ]
    try:
        auth.subscriber(None, None, None, [pattern])
    except AuthError as exc:
        assert exc.status == 401 and exc.reason == "no_credential", exc.message
        if "can reach '" in exc.message:
            witness = exc.message.split("can reach ")[1].split(",")[0].strip("'")
            assert matches(witness, [pattern]) and auth.is_private(witness)
            assert topic_of_companion(witness) is None
        return
    assert not breaking, breaking[0]


def _walks(monkeypatch: pytest.MonkeyPatch) -> list[Uncovered]:
    """Every containment walk ``Authenticator.reach`` asks for, as answered."""
    walks: list[Uncovered] = []
    real = uncovered

    def recorded(*args: Any) -> Uncovered:
        real.cache_clear()  # a fresh walk each time: the test counts its steps
        found = real(*args)
        walks.append(found)
        return found

    recorded.cache_info = real.cache_info  # type: ignore[attr-defined]
    monkeypatch.setattr(_auth, "_uncovered", recorded)
    return walks


@pytest.mark.parametrize("private", [ONE_PRIVATE, TWO_PRIVATE])
def test_the_probes_patterns_cost_a_few_hundred_steps_at_most(
    monkeypatch: pytest.MonkeyPatch, private: str
) -> None:
    """The probe's pattern, which meets ``user/*/inbox``, is refused (401) after at
    most ``WITNESS_BUDGET`` steps of walking (it cost a 60 ms walk before); eight
    distinct ones in one request stop at the first; a pattern that meets no private
    pattern walks nothing at all."""
    walks = _walks(monkeypatch)
    auth = Authenticator(Settings(private_topics=private, jwt_secret=SECRET))
    with pytest.raises(AuthError) as refused:
        auth.subscriber(None, None, None, [PROBE])
    assert refused.value.status == 401 and "can reach" in refused.value.message
    assert len(walks) == 1 and walks[0].steps <= _auth.WITNESS_BUDGET
    walks.clear()
    eight = [PROBE.replace("r1-0", f"r1-{i}") for i in range(8)]
    with pytest.raises(AuthError):
        auth.subscriber(None, None, None, eight)
    assert len(walks) == 1  # the first refusal ends the request's checks
    walks.clear()
    public = ["news/*?" + "x" * 178 + "*?", "org/a/team/b/" + "x" * 150 + "*?*?1"]
    assert auth.subscriber(None, None, None, public) is None
    assert walks == []


def test_with_grants_a_request_walks_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a credential, a pattern inside a grant of the usual shape (``user/1/*``)
    walks nothing; one that only the walk can place walks within ``PATTERN_BUDGET``,
    and a request's walks within ``REQUEST_BUDGET`` in all."""
    walks = _walks(monkeypatch)
    auth = Authenticator(Settings(private_topics=TWO_PRIVATE, jwt_secret=SECRET))
    bearer = f"Bearer {token({'subscribe': ['user/1/*', 'org/?/team/*']})}"
    assert auth.subscriber(bearer, None, None, [f"user/1/*?{'x' * 150}*?"]) is not None
    assert walks == []
    patterns = [f"org/?/team/{i}/*" for i in range(4)]
    assert auth.subscriber(bearer, None, None, patterns) is not None
    assert len(walks) == 4 and all(w.steps <= _auth.PATTERN_BUDGET for w in walks)
    assert sum(w.steps for w in walks) <= _auth.REQUEST_BUDGET


#: grants that cover every topic under ``p/`` but the ones whose 15th character from
#: the end is neither "a" nor "b": the walk must tell apart every mix of them
HARD_GRANTS = ["p/", *(f"p/{'?' * n}" for n in range(1, 15)), "p/*a" + "?" * 14, "p/*b" + "?" * 14]


def test_a_pattern_past_the_budget_is_refused_with_400_and_counted() -> None:
    """Through ``GET /events``: a pattern whose containment the walk cannot settle
    within its budget is refused (400, a sentence saying what to do), counted as
    ``pattern_too_complex``; a pattern inside the grants is still served."""

    async def main() -> None:
        app = make_app(private_topics="p/*")
        bearer = {"authorization": f"Bearer {token({'subscribe': HARD_GRANTS})}"}
        stream = Stream(app, query=[("topic", "p/*")], headers=bearer).start()
        await settle()
        assert stream.status == 400, bytes(stream.raw)
        assert "too complex to check" in bytes(stream.raw).decode()
        assert app.hub.metrics.refused_total.get("pattern_too_complex") == 1
        await stream.finished()
        inside = Stream(app, query=[("topic", "p/?")], headers=bearer).start()
        await settle()
        assert inside.status == 200
        inside.disconnect()
        await inside.finished()

    run(main())


def test_refused_streams_count_against_the_connect_rate() -> None:
    """A stream refused for its patterns counts as ``REFUSAL_WEIGHT`` connects: with a
    connect rate of 5/s (a burst of 10) and the clock stopped, one refusal leaves no
    room for another request, where ten public streams in a row are admitted."""

    async def main() -> None:
        app = make_app(private_topics="user/*", connect_rate_per_ip=5)
        app.admission.connect_limiter.clock = lambda: 1000.0  # time stands still
        public = [Stream(app, query=[("topic", "news/*")]).start() for _ in range(10)]
        await settle()
        assert [s.status for s in public] == [200] * 10
        for stream in public:
            stream.disconnect()
            await stream.finished()
        app.admission.connect_limiter.clock = lambda: 2000.0  # the bucket refilled
        refused = Stream(app, query=[("topic", "user/*")]).start()
        await settle()
        assert refused.status == 401
        await refused.finished()
        after = Stream(app, query=[("topic", "news/*")]).start()
        await settle()
        assert b"too many connection attempts" in bytes(after.raw), bytes(after.raw)
        await after.finished()

    run(main())


def test_a_charged_bucket_goes_into_debt_down_to_its_burst() -> None:
    clock = [0.0]
    bucket = TokenBucket(rate=1.0, burst=4.0, clock=lambda: clock[0])
    assert bucket.take("a") == 0.0  # 3 left
    bucket.charge("a", REFUSAL_WEIGHT - 1)  # 3 - 9: down to -4 at most
    assert bucket.take("a") == pytest.approx(5.0)  # from -4 to 1 at 1/s
    clock[0] += 5.0
    assert bucket.take("a") == 0.0


@pytest.mark.parametrize(
    ("private", "pattern", "ignored"),
    [
        ("user/*", "news/*", True),  # meets no private pattern
        ("user/*", "user/1/*", False),  # reaches one: the cookie was needed
        ("*/presence", "room/*", True),  # meets it in presence companions only
        ("user/*", PROBE, False),  # the probe's, at its bounded cost
    ],
)
def test_a_failing_cookie_is_ignored_when_the_patterns_reach_no_private_topic(
    private: str, pattern: str, ignored: bool
) -> None:
    """A cookie that fails verification is ignored (the stream is public) when the
    request's patterns reach no private topic, by the same bounded check as without
    a cookie; else refused (401)."""
    auth = Authenticator(Settings(private_topics=private, jwt_secret=SECRET))
    told: list[AuthError] = []
    try:
        credential = auth.subscriber(None, "sse_fast_token=garbage", None, [pattern], told.append)
    except AuthError as exc:
        assert not ignored and exc.status == 401
        return
    assert ignored and credential is None and len(told) == 1
