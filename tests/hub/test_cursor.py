"""Cursors (``hub/_cursor.py``): the id of a stream over several partitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_fast.hub._cursor import MAX_COMPONENTS, REST, format_cursor, parse_cursor

_POSITIONS = st.dictionaries(
    st.integers(min_value=0, max_value=1023),
    st.integers(min_value=0, max_value=2**63 - 1),
    min_size=1,
    max_size=40,
)


@given(_POSITIONS)
def test_a_cursor_reads_back_as_its_positions(positions: dict[int, int]) -> None:
    text = format_cursor(positions)
    assert parse_cursor(text) == positions
    assert text.isascii() and "\n" not in text


@given(_POSITIONS, st.integers(min_value=0, max_value=2**63 - 1), st.booleans())
def test_a_pattern_streams_cursor_reads_back_with_its_rest(
    positions: dict[int, int], rest: int, alone: bool
) -> None:
    """A pattern stream's cursor: the partitions it lists, then ``*`` for the rest (or the
    rest alone: a pattern stream with no topic yet)."""
    positions = {REST: rest} if alone else {**positions, REST: rest}
    text = format_cursor(positions)
    assert parse_cursor(text) == positions
    assert text.split(".")[-1].startswith("*:")


def test_the_rest_example() -> None:
    positions = {3: 1764160000123456, REST: 1764160000123465}
    assert format_cursor(positions) == "~1764160000123456.3:0.*:9"
    assert parse_cursor("~1764160000123456.*:0") == {REST: 1764160000123456}


def test_the_design_example() -> None:
    """Design 42, section 8: base, then partition:delta, partitions increasing."""
    positions = {17: 1764160000128468, 3: 1764160000123456, 90: 1764160000123478}
    assert format_cursor(positions) == "~1764160000123456.3:0.17:5012.90:22"
    assert parse_cursor("~1764160000123456.3:0.17:5012.90:22") == positions


@pytest.mark.parametrize(
    "text",
    [
        "",
        "~",
        "~5",  # no component
        "~5.",
        "~5.0",  # no colon
        "~5.0:",
        "~5.:0",
        "~+5.0:0",  # a sign
        "~5.+0:0",
        "~5.0:+1",
        "~-5.0:0",
        "~5.0:-1",
        "~05.0:0",  # a leading zero
        "~5.00:0",
        "~5.0:01",
        "~5.1:0.1:2",  # partitions not strictly increasing
        "~5.2:0.1:2",
        "~5.0:1.1:2",  # the base is not the smallest component
        "~5.0:1",
        "~5.10000:0",  # a partition of five digits
        "~12345678901234567890.0:0",  # twenty digits
        "~9223372036854775807.0:0.1:1",  # past 2**63 - 1
        "~5.0:0 ",
        " ~5.0:0",
        "~5.0:0\n",
        "~5.٣:0",  # a non-ASCII digit
        "~5.0:0." + ".".join(f"{p}:0" for p in range(1, MAX_COMPONENTS + 1)),  # too many
        "~5.0:0" + "0" * 40000,  # too long
        "~5.*:0.0:0",  # the rest first
        "~5.0:0.*:0.*:1",  # two rests
        "~5.*:",
        "~5.*:01",
        "~5.0:1.*:1",  # the base is not the smallest component
        "~5.*0",
    ],
    ids=lambda text: text if len(text) < 40 else f"{text[:20]}...({len(text)} characters)",
)
def test_a_malformed_cursor_is_none(text: str) -> None:
    assert parse_cursor(text) is None


@given(st.text(max_size=40))
def test_plain_ids_are_never_cursors(text: str) -> None:
    """Publishers' ids and positions do not start with "~": never read as a cursor."""
    if not text.startswith("~"):
        assert parse_cursor(text) is None
    assert parse_cursor(str(len(text) + 1764160000123456)) is None


def test_nothing_to_format_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        format_cursor({})
    with pytest.raises(ValueError, match="negative"):
        format_cursor({0: -1})
