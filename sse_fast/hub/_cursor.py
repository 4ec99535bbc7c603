"""Cursors: the id of a stream whose topics fall in several partitions.

A broker with several partitions (``Broker.partitions``) numbers each
partition's events in a sequence of its own: positions of different partitions
are not comparable, so no single number says how far such a stream went. Its
``id:`` is a cursor instead, one position per partition it covers::

    cursor    = "~" base (1*("." partition ":" delta) ["." "*" ":" delta] / "." "*" ":" delta)
    base      = decimal, the smallest component's position
    partition = decimal, strictly increasing
    delta     = decimal, the component's position - base

``~1764160000123456.3:0.17:5012`` is partition 3 at 1764160000123456 and
partition 17 at 1764160000128468. A stream of topic patterns may match topics
of any partition, most of which it has none of yet: its cursor ends with the
*rest*, ``*``, one position for every partition not listed (``REST`` in the
positions). ``~1764160000123456.3:0.*:9`` is partition 3 at 1764160000123456 and
every other partition at 1764160000123465. Decimals have no sign and no leading zero
(but ``0``); a cursor longer than ``MAX_CURSOR_LENGTH`` characters, with more
than ``MAX_COMPONENTS`` components, a position of more than 19 digits (over
2**63 - 1) or a partition of more than 4 is refused (``parse_cursor`` gives
None): a client's ``Last-Event-ID`` is untrusted input. A plain id (a number, a
publisher's id) never starts with ``~``, so it is never read as a cursor.

``with_id`` puts a cursor in a stored frame in place of its own id line: the
frames of every broker carry one (``id: ...``, first, or after the ``event:``
line and comments as the encoder orders them); a frame without one gets it first.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "MAX_COMPONENTS",
    "MAX_CURSOR_LENGTH",
    "REST",
    "format_cursor",
    "parse_cursor",
    "with_id",
]

#: the most components a cursor may have (the most partitions a layout may have)
MAX_COMPONENTS = 1024
#: the longest cursor read, in characters (``MAX_COMPONENTS`` components of
#: 4 + 19 digits and their separators fit, and the rest)
MAX_CURSOR_LENGTH = 20 + 25 * (MAX_COMPONENTS + 1)
#: the key of the rest in a cursor's positions: every partition not listed
REST = -1
#: the largest position (a signed 64-bit integer, as the native core keeps it)
_MAX_POSITION = 2**63 - 1
_DIGITS = frozenset("0123456789")


def format_cursor(positions: Mapping[int, int]) -> str:
    """The cursor of ``positions`` (partition -> position, ``REST`` -> the rest's; at least
    one, none negative)."""
    if not positions:
        raise ValueError("a cursor needs at least one partition's position, or the rest")
    base = min(positions.values())
    if base < 0:
        raise ValueError(f"a cursor's positions cannot be negative (got {base})")
    parts = [f"~{base}"]
    for partition in sorted(positions):
        if partition != REST:
            parts.append(f".{partition}:{positions[partition] - base}")
    if REST in positions:
        parts.append(f".*:{positions[REST] - base}")
    return "".join(parts)


def _number(text: str, digits: int) -> int | None:
    """``text`` as a decimal of at most ``digits`` digits, no sign, no leading zero."""
    if not text or len(text) > digits or not _DIGITS.issuperset(text):
        return None
    if len(text) > 1 and text[0] == "0":
        return None
    return int(text)


def parse_cursor(text: str) -> dict[int, int] | None:
    """The positions (partition -> position) of cursor ``text``; None if it is not
    a well-formed cursor (see the module doc)."""
    if not text.startswith("~") or len(text) > MAX_CURSOR_LENGTH:
        return None
    head, *components = text[1:].split(".")
    base = _number(head, 19)
    if base is None or not components or len(components) > MAX_COMPONENTS + 1:
        return None  # (+ 1: the rest)
    positions: dict[int, int] = {}
    if components[-1].startswith("*:"):
        rest = _number(components.pop()[2:], 19)
        if rest is None or base + rest > _MAX_POSITION:
            return None
        positions[REST] = base + rest
    if len(components) > MAX_COMPONENTS:
        return None
    previous = -1
    for component in components:
        partition_text, colon, delta_text = component.partition(":")
        partition = _number(partition_text, 4)
        delta = _number(delta_text, 19)
        if not colon or partition is None or delta is None or partition <= previous:
            return None
        if base + delta > _MAX_POSITION:
            return None
        positions[partition] = base + delta
        previous = partition
    if min(positions.values()) != base:
        return None  # the base is the smallest component: one spelling per cursor
    return positions


def with_id(frame: bytes, id_line: bytes) -> bytes:
    """``frame`` (one encoded event) with ``id_line`` (``b"id: ...\n"``) in place
    of its own id line (see the module doc)."""
    if frame.startswith(b"id:"):
        return id_line + frame[frame.index(b"\n") + 1 :]
    start = frame.find(b"\nid:")  # a data line starts "data:", a comment ":": never this
    if start < 0:
        return id_line + frame
    end = frame.index(b"\n", start + 1) + 1
    return frame[: start + 1] + id_line + frame[end:]
