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
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

__all__ = ["PatternError", "check_pattern", "is_pattern", "matches", "overlap"]

#: the wildcards a pattern may hold
WILDCARDS = "*?"
#: the most states ``overlap`` walks before it answers True unchecked
MAX_OVERLAP_STATES = 100_000


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
