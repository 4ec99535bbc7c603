"""Ids read from clients (``Last-Event-ID``, query parameters)."""

from __future__ import annotations


def message_id(text: str | None) -> int | None:
    """``text`` as a message id (a decimal number, ASCII, at most 18 digits), or None."""
    if text is None or not (text.isascii() and text.isdecimal()) or len(text) > 18:
        return None
    return int(text)
