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
