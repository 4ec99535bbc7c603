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
pattern subscriptions all ask it. ``meets`` says whether some topic matches
several patterns at once (admission, webhooks, the start-up check of presence
made public).

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
witness is a shortest one. Past its work budget (``CONTAINMENT_BUDGET`` steps of
one pattern by one character, or the caller's) it answers with no witness and
``too_complex``: the caller refuses (fail closed).

Meeting (``meets``): whether some topic matches a pattern and each of a few
others. The question admission asks first, of every subscription pattern against
every private pattern, before any containment walk, so its cost must not depend
on how the pattern was built to be hard: it is a walk over the others' product
(the server's own short patterns, laid out once per tuple: ``_MeetingGraph``) in
which the subscription pattern's positions are the bits of one integer. Every
edge of that graph moves one of the others on, so it is walked once, in order,
at a few integer operations an edge: the work is the size of the others'
product, times nothing that the subscription pattern can grow (its length only
widens the integers). Where all the others stand on a ``*`` (a loop on any
character), the pattern can reach every position after its first one set.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
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
    "meets",
    "uncovered",
]

#: the wildcards a pattern may hold
WILDCARDS = "*?"
#: the most steps (one character tried, every pattern moved by it) ``uncovered`` takes
#: before it gives up, unless the caller gives a budget of its own (the caller
#: refuses): about 1 ms of a worker's CPU (benches/admission.py)
CONTAINMENT_BUDGET = 4_000
#: where every pattern can be after the same characters (``_Packed``: positions as bits)
State = int
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
    #: whether the walk used up its budget without an answer (refuse)
    too_complex: bool
    #: the steps the walk took (one character tried, every pattern moved by it)
    steps: int = 0


@functools.lru_cache(maxsize=CONTAINMENT_CACHE)
def uncovered(
    pattern: str,
    reached: tuple[str, ...],
    excluded: tuple[str, ...],
    budget: int = CONTAINMENT_BUDGET,
) -> Uncovered:
    """A topic that ``pattern`` matches, one of ``reached`` matches and none of
    ``excluded`` matches, if there is one (see the module doc). For a subscription:
    ``reached`` the private topics, ``excluded`` the credential's grants (and the
    topics a pattern never reaches). Names and patterns alike (``*`` and ``?``).
    ``budget``: the steps (one character tried, every pattern moved by it at once)
    the walk may take before it answers ``too_complex``."""
    if not reached or "*" in excluded:
        return Uncovered(None, False)
    patterns = (pattern, *reached, *excluded)
    letters = sorted({c for p in patterns for c in p if c not in WILDCARDS})
    other = next((c for c in TOPIC_CHARACTERS if c not in letters), None)
    alphabet = letters if other is None else [*letters, other]
    packed = _Packed.of(patterns, len(reached))
    takes = [(letter, packed.takes(letter)) for letter in alphabet]
    stars, first, reaching = packed.stars, packed.first, packed.reaching
    # where the pattern (first) stands on no wildcard, only its literals there can
    # move it, and only they are tried
    wild = first & (packed.stars | packed.marks)
    start = packed.close(packed.starts)
    # the walk starts one character in (no topic is empty): ``parents`` holds, per
    # state, the state it was reached from (0: the start), ``letters`` by which letter
    # (two dicts of numbers and strings, which the collector does not track: a walk
    # allocates nothing it must look at, and sets off no collection)
    parents: dict[State, State] = {}
    letters_to: dict[State, str] = {}
    frontier: list[State | None] = [None]
    steps = 0
    while frontier:
        following: list[State | None] = []
        for state in frontier:
            at = start if state is None else state
            if state is not None and packed.breaks_rule(state):
                return Uncovered(_path(parents, letters_to, state), False, steps)
            tried = takes if at & wild else [(c, t) for c, t in takes if t & at & first]
            if steps + len(tried) > budget:
                return Uncovered(None, True, steps)
            steps += len(tried)
            staying = at & stars
            for letter, taken in tried:
                moved = (at & taken) << 1 | staying
                moved |= (moved & stars) << 1
                if not moved & first or not moved & reaching or moved in parents:
                    continue  # the pattern cannot go on, no reached one can: no witness
                parents[moved] = state or 0
                letters_to[moved] = letter
                following.append(moved)
        frontier = following
    return Uncovered(None, False, steps)


class _Packed(NamedTuple):
    """Several patterns' positions side by side in one integer (``_Positions``, each
    at its offset, ``len + 1`` bits apiece: a move never crosses into the next), so
    that one character moves them all in a few integer operations. Order: the
    pattern, then the reached ones, then the excluded ones."""

    stars: int
    marks: int
    literals: dict[str, int]
    #: each pattern's start, end, and the bits of the pattern and of the reached ones
    starts: int
    first_end: int
    reached_ends: int
    excluded_ends: int
    first: int
    reaching: int

    @staticmethod
    def of(patterns: tuple[str, ...], count: int) -> _Packed:
        stars = marks = starts = reached_ends = excluded_ends = first = reaching = 0
        first_end = 0
        literals: dict[str, int] = {}
        offset = 0
        for index, pattern in enumerate(patterns):
            laid = _Positions.of(pattern)
            stars |= laid.stars << offset
            marks |= laid.marks << offset
            for letter, bits in laid.literals.items():
                literals[letter] = literals.get(letter, 0) | bits << offset
            starts |= 1 << offset
            span = ((1 << (laid.end + 1)) - 1) << offset
            end = 1 << (offset + laid.end)
            if index == 0:
                first, first_end = span, end
            elif index <= count:
                reaching |= span
                reached_ends |= end
            else:
                excluded_ends |= end
            offset += laid.end + 1
        return _Packed(
            stars,
            marks,
            literals,
            starts,
            first_end,
            reached_ends,
            excluded_ends,
            first,
            reaching,
        )

    def takes(self, letter: str) -> int:
        """The positions ``letter`` moves on from, in every pattern (``?`` and itself)."""
        return self.marks | self.literals.get(letter, 0)

    def close(self, bits: int) -> int:
        """``bits`` and the positions past the ``*`` they stand on (one ``*`` a run)."""
        return bits | (bits & self.stars) << 1

    def breaks_rule(self, state: int) -> bool:
        """The walk's characters so far are a topic: the pattern and a reached pattern
        match it, no excluded one does."""
        return bool(
            state & self.first_end and state & self.reached_ends and not state & self.excluded_ends
        )


class _Positions(NamedTuple):
    """A pattern's positions as the bits of an integer (bit ``i``: before character
    ``i``; bit ``end``: past the last), and which ones each character moves on."""

    stars: int
    marks: int
    literals: dict[str, int]
    end: int

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def of(pattern: str) -> _Positions:
        """Laid out once per pattern (admission asks of one pattern several times:
        against each private pattern, each grant, the companion rule, then walks);
        shared, so never changed."""
        pattern = _one_star(pattern)
        stars = marks = 0
        literals: dict[str, int] = {}
        for index, char in enumerate(pattern):
            bit = 1 << index
            if char == "*":
                stars |= bit
            elif char == "?":
                marks |= bit
            else:
                literals[char] = literals.get(char, 0) | bit
        return _Positions(stars, marks, literals, len(pattern))

    def takes(self, letter: str) -> int:
        """The positions ``letter`` moves on from (``?`` and itself)."""
        return self.marks | self.literals.get(letter, 0)

    def close(self, bits: int) -> int:
        """``bits`` and the positions past the ``*`` they stand on (one ``*`` a run)."""
        return bits | (bits & self.stars) << 1


def meets(pattern: str, others: tuple[str, ...]) -> bool:
    """Whether some topic matches ``pattern`` and every one of ``others`` (``*`` and
    ``?``; see the module doc): work in the size of the others' product, whatever
    ``pattern`` is. ``others`` are the server's own patterns (their layout is cached
    by the tuple); ``pattern`` may come from anyone."""
    graph = _meeting_graph(others)
    laid = _Positions.of(pattern)
    end, stars, marks, literals = laid.end, laid.stars, laid.marks, laid.literals
    movable = ((1 << end) - 1) & ~stars  # positions any character moves on from
    every = (1 << (end + 1)) - 1
    reached = [0] * len(graph.loops)
    reached[0] = 1 | ((1 & stars) << 1)
    for node, here in enumerate(reached):
        if not here:
            continue
        if graph.loops[node]:  # any characters: every position after the first one set
            here = reached[node] = every & ~((here & -here) - 1)
        for after in graph.skips[node]:
            reached[after] |= here
        staying = here & stars
        for after, letter in graph.steps[node]:
            takes = movable if letter is None else marks | literals.get(letter, 0)
            moved = ((here & takes) << 1) | staying
            reached[after] |= moved | ((moved & stars) << 1)
    return bool(reached[-1] >> end & 1)


class _MeetingGraph(NamedTuple):
    """The product of a few patterns' positions, laid out for ``meets``: nodes in an
    order where every edge goes forward (the sum of positions grows), the first all
    at their start, the last all at their end."""

    #: per node: whether every pattern stands on a ``*`` (any character keeps it there)
    loops: list[bool]
    #: per node: the nodes one ``*`` matching nothing leads to
    skips: list[list[int]]
    #: per node: (node, character) after one more character: a literal every pattern
    #: takes, or None for any character (each stands on ``?`` or ``*``)
    steps: list[list[tuple[int, str | None]]]


@functools.lru_cache(maxsize=64)
def _meeting_graph(others: tuple[str, ...]) -> _MeetingGraph:
    patterns = tuple(_one_star(p) for p in others)
    nodes = sorted(
        itertools.product(*(range(len(p) + 1) for p in patterns)), key=lambda n: (sum(n), n)
    )
    index = {node: i for i, node in enumerate(nodes)}
    loops: list[bool] = []
    skips: list[list[int]] = []
    steps: list[list[tuple[int, str | None]]] = []
    for node in nodes:
        chars = [p[i] if i < len(p) else "" for p, i in zip(patterns, node, strict=True)]
        loops.append(all(c == "*" for c in chars))
        skips.append(
            [
                index[(*node[:k], i + 1, *node[k + 1 :])]
                for k, i in enumerate(node)
                if chars[k] == "*"
            ]
        )
        named = {c for c in chars if c not in WILDCARDS}
        if "" in chars or len(named) > 1 or loops[-1]:
            steps.append([])
            continue
        after = tuple(i if c == "*" else i + 1 for c, i in zip(chars, node, strict=True))
        steps.append([(index[after], named.pop() if named else None)])
    return _MeetingGraph(loops, skips, steps)


def _one_star(pattern: str) -> str:
    """``pattern`` with each run of ``*`` made one (the same topics)."""
    while "**" in pattern:
        pattern = pattern.replace("**", "*")
    return pattern


def _path(parents: dict[State, State], letters: dict[State, str], state: State) -> str:
    """The characters walked from the start to ``state``."""
    walked = []
    while state:
        walked.append(letters[state])
        state = parents[state]
    return "".join(reversed(walked))
