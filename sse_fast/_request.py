"""``PublishRequest``: one validated event to publish (its own module, so that the
native publish checker ``_publish_ext`` can build them without importing the
settings; ``sse_fast.publishing`` is where users get it)."""

from __future__ import annotations

from typing import Any, NamedTuple


class PublishRequest(NamedTuple):
    """One validated event to publish to ``topics`` (immutable; a NamedTuple, which
    is built in a third of a frozen dataclass's time: the publish path makes one
    per event)."""

    topics: tuple[str, ...]
    data: Any = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None


# documented and pickled as sse_fast.publishing.PublishRequest, where users import it
PublishRequest.__module__ = "sse_fast.publishing"
