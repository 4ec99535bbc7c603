"""Containment (``_patterns.uncovered``): whether a subscription pattern can reach a
topic outside what its subscriber may have, decided exactly. Property tests against
the reference matcher (``matches``, itself ``fnmatch``) over every short topic, and
the issue's examples."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sse_fast._patterns import literal_prefix, matches, uncovered

from ..support.asgi_harness import Stream, settle
from ..support.security_harness import SECRET, make_app, run, token

#: the letters random patterns are made of; brute force adds one none of them uses
LETTERS = "ab/"
OTHER = "c"


def _patterns(min_size: int = 1, max_size: int = 4) -> st.SearchStrategy[str]:
    return st.text(alphabet=LETTERS + "*?", min_size=min_size, max_size=max_size)


def _topics(longest: int) -> list[str]:
    """Every topic of at most ``longest`` characters over the letters and the other one."""
    return [
        "".join(chars)
        for size in range(1, longest + 1)
        for chars in itertools.product(LETTERS + OTHER, repeat=size)
    ]


TOPICS = _topics(6)


@settings(max_examples=300, deadline=None)
@given(
    _patterns(),
    st.lists(_patterns(), min_size=1, max_size=2),
    st.lists(_patterns(), max_size=2),
)
@example("user/*/inbox", ["*"], ["user/1/*"])
def test_a_witness_breaks_the_rule_and_none_means_no_short_topic_does(
    pattern: str, reached: list[str], excluded: list[str]
) -> None:
    """A witness is a topic the pattern and a reached pattern match and no excluded one
    does (checked with the reference matcher); no witness means that no topic of up to
    six characters (over the patterns' letters and one they do not use) breaks the rule."""
    found = uncovered(pattern, tuple(reached), tuple(excluded))
    assert not found.too_complex
    if found.witness is not None:
        witness = found.witness
        assert witness
        assert matches(witness, [pattern]) and matches(witness, reached)
        assert not matches(witness, excluded)
        return
    for topic in TOPICS:
        assert not (
            matches(topic, [pattern]) and matches(topic, reached) and not matches(topic, excluded)
        ), topic


@settings(max_examples=200, deadline=None)
@given(_patterns(), st.lists(_patterns(), min_size=1, max_size=3))
def test_a_pattern_inside_its_grants_reaches_nothing_else(pattern: str, grants: list[str]) -> None:
    """Against every topic as the reached set (``*``), the answer is exactly whether the
    grants cover every topic the pattern matches, which brute force checks."""
    found = uncovered(pattern, ("*",), tuple(grants))
    outside = [t for t in TOPICS if matches(t, [pattern]) and not matches(t, grants)]
    if outside:
        assert found.witness is not None
        assert len(found.witness) <= len(outside[0])  # breadth first: a shortest one
    else:
        assert found.witness is None  # up to six characters: the walk proves the rest


@pytest.mark.parametrize(
    ("pattern", "grants", "witness"),
    [
        ("user/*/inbox", ("user/1/*",), "user//inbox"),
        ("user/1/*", ("user/1/*",), None),
        ("user/1?", ("user/1*",), None),
        ("user/1*", ("user/1?",), "user/1"),
        ("user/*", ("user/*/inbox", "user/*/outbox"), "user/"),
        ("shop/7/order-*", ("shop/7/*",), None),
        ("shop/*/order-1", ("shop/?/order-1",), "shop//order-1"),
    ],
)
def test_the_issues_examples(pattern: str, grants: tuple[str, ...], witness: str | None) -> None:
    """``user/*/inbox`` under a grant of ``user/1/*`` is refused with a topic it would
    reach; ``user/1/*`` is allowed; a narrower wildcard under a wider one is too."""
    assert uncovered(pattern, ("*",), grants).witness == witness


def test_public_topics_need_no_grant_and_star_grants_everything() -> None:
    """Only the reached (private) topics count; a grant of ``*`` covers them all."""
    assert uncovered("news/*", ("user/*",), ()).witness is None
    assert uncovered("*", ("user/*/inbox",), ("user/1/*",)).witness == "user//inbox"
    assert uncovered("*", ("user/*/inbox",), ("*",)).witness is None
    assert uncovered("user/*", (), ()).witness is None


def test_a_walk_too_big_gives_up_and_says_so() -> None:
    """Past its bound the walk answers ``too_complex``, never "covered"."""
    # every topic up to 14 characters is granted, and the longer ones whose 15th
    # character from the end is "a" or "b": the shortest topic outside is 15 long, and
    # the walk must tell apart every mix of "a" and "b" among the last 14 to find it
    grants = (*("?" * size for size in range(1, 15)), "*a" + "?" * 14, "*b" + "?" * 14)
    found = uncovered("*", ("*",), grants)
    assert found.too_complex and found.witness is None


def test_literal_prefix() -> None:
    assert literal_prefix("user/42/*") == "user/42/"
    assert literal_prefix("order-?-x*") == "order-"
    assert literal_prefix("*") == ""
    assert literal_prefix("news") == "news"


# ---------------------------------------------------------------- the credential's rule


@settings(max_examples=200, deadline=None)
@given(
    _patterns().filter(lambda p: "*" in p or "?" in p),
    st.lists(_patterns(0, 3).filter(bool), min_size=1, max_size=2),
    st.lists(_patterns(0, 3).filter(bool), max_size=2),
)
def test_a_subscription_pattern_is_allowed_exactly_when_no_topic_breaks_the_rule(
    pattern: str, private: list[str], grants: list[str]
) -> None:
    """``Authenticator.subscriber`` with a credential: a pattern is refused (403, naming
    a topic) exactly when some topic it matches is private (``is_private``) and not
    granted (``may_subscribe``), the server's own functions; a presence companion is
    never reached by a pattern. Brute force over every topic of up to six characters
    checks both ways."""
    from sse_fast._companions import topic_of_companion
    from sse_fast.app._auth import Authenticator, AuthError
    from sse_fast.settings import Settings

    auth = Authenticator(Settings(private_topics=",".join(private), jwt_secret=SECRET))
    bearer = f"Bearer {token({'subscribe': grants})}"
    credential = auth.subscriber(bearer, None, None, []) or pytest.fail("no credential")
    breaking = [
        t
        for t in TOPICS
        if matches(t, [pattern])
        and topic_of_companion(t) is None
        and auth.is_private(t)
        and not auth.may_subscribe(credential, t)
    ]
    try:
        auth.subscriber(bearer, None, None, [pattern])
    except AuthError as exc:
        assert exc.status == 403 and exc.reason == "forbidden_pattern"
        witness = exc.message.split("can reach ")[1].split(",")[0].strip("'")
        assert auth.is_private(witness) and not auth.may_subscribe(credential, witness)
        assert matches(witness, [pattern])
        return
    assert not breaking, breaking[0]


@pytest.mark.parametrize(
    ("grants", "query", "status", "says"),
    [
        (None, ["news/*"], 200, ""),
        (None, ["user/*"], 401, "can reach 'user/"),
        (["user/1/*"], ["user/*/inbox"], 403, "pattern 'user/*/inbox' can reach 'user/"),
        (["user/1/*"], ["user/1/*"], 200, ""),
        (["user/1/*"], ["user/1/*", "news/*", "user/1/inbox"], 200, ""),
        (["user/1/*"], ["user/1/*", "user/2/inbox"], 403, "may not subscribe to user/2/inbox"),
        (["*"], ["user/*"], 200, ""),
        (None, ["*"], 400, "too broad"),
        (None, ["user/[12]/*"], 400, "no character classes"),
        (None, ["a/*?*?*"], 400, "5 wildcards"),
        (None, [f"p{i}/*" for i in range(9)], 400, "at most 8 per stream"),
        (None, ["p/" + "a" * 198 + "*"], 400, "201 characters long; the limit is 200"),
        # patterns count among the 16 topics of a stream with the names
        (None, [*(f"n{i}" for i in range(9)), *(f"p{i}/*" for i in range(8))], 400, "at most 16"),
    ],
)
def test_the_edge_refuses_with_a_sentence(
    grants: list[str] | None, query: list[str], status: int, says: str
) -> None:
    """Through ``GET /events``: patterns and names mixed, refused with 400 (malformed,
    too broad, too many), 401 (no credential, a pattern that reaches a private topic)
    or 403 (naming a topic the pattern would reach), allowed inside the grants."""

    async def main() -> None:
        app = make_app(private_topics="user/*", allow_anonymous_publish=True)
        headers = (
            {} if grants is None else {"authorization": f"Bearer {token({'subscribe': grants})}"}
        )
        stream = Stream(app, query=[("topic", q) for q in query], headers=headers).start()
        await settle()
        assert stream.status == status, bytes(stream.raw)
        assert says in bytes(stream.raw).decode()
        if status == 200:
            stream.disconnect()
        await stream.finished()

    run(main())


def test_a_public_pattern_costs_a_few_steps_whatever_the_grants() -> None:
    """A branch ends where no private pattern can match any more: a pattern that meets
    no private topic is answered at once, never walked through the grants' states (a
    client without a token could otherwise make every request cost the whole bound,
    or be refused as too complex for a public pattern)."""
    grants = (*("?" * size for size in range(1, 15)), "*a" + "?" * 14, "*b" + "?" * 14)
    found = uncovered("q/*a*b*", ("p/*",), grants)
    assert found.witness is None and not found.too_complex and found.steps < 200
    assert uncovered("*", ("p/*",), ("q/*",)).witness == "p/"  # where they meet: found


@pytest.mark.parametrize("pattern", ["/*presence", "/presenc?", "?presence"])
def test_the_topic_named_presence_alone_is_no_companion(pattern: str) -> None:
    """``/presence`` alone is a topic (a companion has a topic before its suffix): a
    pattern reaching it when it is private is refused like any other."""
    from sse_fast.app._auth import Authenticator, AuthError
    from sse_fast.settings import Settings

    auth = Authenticator(Settings(private_topics="/presence", jwt_secret=SECRET))
    with pytest.raises(AuthError, match="can reach '/presence'") as refused:
        auth.subscriber(None, None, None, [pattern])
    assert refused.value.status == 401
    assert auth.subscriber(None, None, None, ["room/*"]) is None  # room/x/presence: no
