"""The naming rule of presence companions, on its own so that anything may ask it.

A topic tracked for presence (``presence_topics``) has a companion topic where
its join and leave news is published: its name followed by ``COMPANION``
(``room:1/presence``). Presence (``_presence.py``) publishes there, grants and
private topics treat it with its topic (``app/_auth.py``), and topic patterns
never match it (``_matching.py``): a companion is named to be had.
"""

from __future__ import annotations

__all__ = ["COMPANION", "topic_of_companion"]

#: what a tracked topic's name is followed by to name its companion topic, where its news is
#: published
COMPANION = "/presence"


def topic_of_companion(name: str) -> str | None:
    """The topic whose presence news ``name`` carries (``room:1`` for
    ``room:1/presence``), None when ``name`` is no companion topic."""
    if name.endswith(COMPANION) and len(name) > len(COMPANION):
        return name[: -len(COMPANION)]
    return None
