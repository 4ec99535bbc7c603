"""Topic patterns: one syntax for every grant and every topic list.

A pattern is an exact topic name or a glob with two wildcards, and only two:

* ``*`` matches any run of characters, slashes included (``user/*`` covers
  ``user/42/inbox``); ``*`` alone covers every topic;
* ``?`` matches exactly one character.

Nothing else is special. ``[`` (a character class to ``fnmatch``, the matcher
underneath) is refused where a pattern comes in (``check_pattern``): in a
JWT's ``sse_fast.publish``/``sse_fast.subscribe`` claims (401) and in the
settings that list topics (``private_topics``, ``presence_topics``,
``public_presence_topics``, ``webhook_topics``: the server does not start).
An issuer building ``user/{id}/*`` from user data must not widen a grant by
accident (``user/[12]/*`` would cover two users). Topic names cannot contain
``*``, ``?``, ``[`` or ``]``, so a name never acts as a pattern, and the
matcher takes any ``[`` that got past the checks literally: it then matches
nothing.

``matches`` is the one matcher: grants, private topics, presence, webhooks and
pattern subscriptions all ask it. ``overlap`` says whether some topic matches
several patterns at once (the start-up check of presence made public).

Containment (``uncovered``): whether a subscription pattern can reach a topic
its subscriber may not have. Glob languages are regular, so the question is
decided exactly, by a walk over the positions every pattern can be at after the
same characters (one set of positions per pattern: a grant must be *missed* by
the witness, which needs all the places it could be, not one). The alphabet is
the characters the patterns name plus one that none does (every other
character behaves as that one). A branch ends where the subscription pattern
or every reached pattern can no longer match: a public pattern that meets no
private one costs a few steps, whatever the grants. A state where the subscription pattern and a
"reached" pattern (the private topics) accept and no "excluded" pattern (the
grants) does is a topic that breaks the rule; the characters walked to it are
that topic, the witness a refusal names. The walk is breadth first, so the
witness is a shortest one. Past ``MAX_CONTAINMENT_STATES`` it answers with no
witness and ``too_complex``: the caller refuses (fail closed).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable
from typing import NamedTuple

from ._core.request import TOPIC_CHARACTERS

__all__ = [
    "PatternError",
    "Uncovered",
    "check_pattern",
    "is_pattern",
    "literal_prefix",
    "matches",
    "overlap",
    "uncovered",
]

#: the wildcards a pattern may hold
WILDCARDS = "*?"
#: the most states ``overlap`` walks before it answers True unchecked
MAX_OVERLAP_STATES = 100_000
#: the most states ``uncovered`` walks before it gives up (the caller refuses)
MAX_CONTAINMENT_STATES = 20_000
#: where each pattern can be after the same characters (one set of positions each)
State = tuple[frozenset[int], ...]
#: the answers ``uncovered`` remembers (by its arguments: patterns and grants repeat)
CONTAINMENT_CACHE = 1024


class PatternError(ValueError):
    """A pattern outside the syntax (``*`` and ``?`` only); the message says what to do."""


def is_pattern(text: str) -> bool:
    """Whether ``text`` has a wildcard (else it names one topic)."""
    return "*" in text or "?" in text


def check_pattern(pattern: str) -> str:
    """``pattern``, or ``PatternError`` when it uses syntax other than ``*`` and ``?``."""
    if "[" in pattern:
        raise PatternError(
            f"pattern {pattern[:80]!r} has '[': topic patterns know only * (any run of "
            "characters) and ? (one character), not character classes; list the topics "
            "one by one instead"
        )
    return pattern


def matches(topic: str, patterns: Iterable[str]) -> bool:
    """True when ``topic`` is one of ``patterns`` or matches one of their globs
    (``*`` and ``?`` only; anything else is literal)."""
    for pattern in patterns:
        if pattern == topic or pattern == "*":
            return True
        if "*" in pattern or "?" in pattern:
            if "[" in pattern:  # refused on the way in; literal should one get here
                pattern = pattern.replace("[", "[[]")
            if fnmatch.fnmatchcase(topic, pattern):  # compiled once, cached by fnmatch
                return True
    return False


def overlap(*patterns: str) -> bool:
    """Whether some topic name matches every one of ``patterns`` (``*`` and ``?``
    as in ``matches``). A walk over the positions reached in each pattern at once,
    as many states at most as the product of the patterns' lengths: for the few
    short patterns of the settings, at start. Past ``MAX_OVERLAP_STATES`` it
    answers True unchecked (for a warning, one too many beats one too few)."""
    size = 1
    for pattern in patterns:
        size *= len(pattern) + 1
    if size > MAX_OVERLAP_STATES:
        return True
    start = tuple(0 for _ in patterns)
    seen = {start}
    todo = [start]
    while todo:
        state = todo.pop()
        if all(i == len(p) for i, p in zip(state, patterns, strict=True)):
            return True
        following = []
        for k, (i, p) in enumerate(zip(state, patterns, strict=True)):  # a * may match nothing more
            if i < len(p) and p[i] == "*":
                following.append((*state[:k], i + 1, *state[k + 1 :]))
        after = _one_character_more(state, patterns)
        if after is not None:
            following.append(after)
        for nxt in following:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def _one_character_more(
    state: tuple[int, ...], patterns: tuple[str, ...]
) -> tuple[int, ...] | None:
    """The state after one more character that every pattern takes: a ``*`` takes
    it and stays, a ``?`` or the literal all agree on moves on; None when the
    patterns cannot agree (two different literals, or one at its end), or when
    only ``*`` took it (no progress)."""
    literal = None
    after = []
    for i, p in zip(state, patterns, strict=True):
        if i == len(p):
            return None
        char = p[i]
        if char == "*":
            after.append(i)
            continue
        if char != "?":
            if literal is not None and literal != char:
                return None
            literal = char
        after.append(i + 1)
    moved = tuple(after)
    return None if moved == state else moved


def literal_prefix(pattern: str) -> str:
    """The characters of ``pattern`` before its first wildcard (all of it for a name)."""
    for index, char in enumerate(pattern):
        if char == "*" or char == "?":
            return pattern[:index]
    return pattern


class Uncovered(NamedTuple):
    """What ``uncovered`` found."""

    #: a shortest topic the pattern reaches, some reached pattern matches and no
    #: excluded one does (None: none exists, or ``too_complex``)
    witness: str | None
    #: whether the walk stopped at ``MAX_CONTAINMENT_STATES`` without an answer (refuse)
    too_complex: bool


@functools.lru_cache(maxsize=CONTAINMENT_CACHE)
def uncovered(pattern: str, reached: tuple[str, ...], excluded: tuple[str, ...]) -> Uncovered:
    """A topic that ``pattern`` matches, one of ``reached`` matches and none of
    ``excluded`` matches, if there is one (see the module doc). For a subscription:
    ``reached`` the private topics, ``excluded`` the credential's grants (and the
    topics a pattern never reaches). Names and patterns alike (``*`` and ``?``)."""
    if not reached or "*" in excluded:
        return Uncovered(None, False)
    patterns = (pattern, *reached, *excluded)
    letters = sorted({c for p in patterns for c in p if c not in WILDCARDS})
    other = next((c for c in TOPIC_CHARACTERS if c not in letters), None)
    alphabet = letters if other is None else [*letters, other]
    start = tuple(_closure(p, frozenset((0,))) for p in patterns)
    # the walk starts one character in (no topic is empty): ``parents`` holds, per
    # state, the state and letter it was reached from (None: the start)
    parents: dict[State, tuple[State | None, str]] = {}
    frontier: list[State | None] = [None]
    count = len(reached)
    while frontier:
        following: list[State | None] = []
        for state in frontier:
            at = start if state is None else state
            if state is not None and _breaks_rule(state, patterns, count):
                return Uncovered(_path(parents, state), False)
            for letter in alphabet:
                moved = tuple(_step(p, here, letter) for p, here in zip(patterns, at, strict=True))
                if not moved[0] or moved in parents:  # the pattern cannot go on: nothing new
                    continue
                if not any(moved[1 : 1 + count]):  # no reached pattern can match: no witness
                    continue
                if len(parents) >= MAX_CONTAINMENT_STATES:
                    return Uncovered(None, True)
                parents[moved] = (state, letter)
                following.append(moved)
        frontier = following
    return Uncovered(None, False)


def _closure(pattern: str, at: frozenset[int]) -> frozenset[int]:
    """``at`` and the positions past the ``*`` it stands on (a ``*`` may match nothing)."""
    out = set(at)
    todo = list(at)
    while todo:
        i = todo.pop()
        if i < len(pattern) and pattern[i] == "*" and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    return frozenset(out)


def _step(pattern: str, at: frozenset[int], letter: str) -> frozenset[int]:
    """The positions after one more character ``letter``."""
    moved = set()
    for i in at:
        if i < len(pattern):
            char = pattern[i]
            if char == "*":
                moved.add(i)
            elif char == "?" or char == letter:
                moved.add(i + 1)
    return _closure(pattern, frozenset(moved)) if moved else frozenset()


def _breaks_rule(state: State, patterns: tuple[str, ...], count: int) -> bool:
    """The walk's characters so far are a topic: the pattern and a reached pattern
    match it, no excluded one does."""
    ends = [len(p) in at for p, at in zip(patterns, state, strict=True)]
    return ends[0] and any(ends[1 : 1 + count]) and not any(ends[1 + count :])


def _path(parents: dict[State, tuple[State | None, str]], state: State) -> str:
    """The characters walked from the start to ``state``."""
    letters = []
    here: State | None = state
    while here is not None:
        here, letter = parents[here]
        letters.append(letter)
    return "".join(reversed(letters))
