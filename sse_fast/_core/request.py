"""``PublishRequest``, one validated event to publish, and the rules both publish
checks share (its own module, so that the native checker ``_publish_ext`` and
its twin can use them without importing the settings; ``sse_fast.publishing`` is
where users get them)."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

#: the characters a topic name is made of (ASCII), in full
TOPIC_CHARACTERS = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~:/@!$&'()+,;=%-"
)
TOPIC_NAME = re.compile(f"[{re.escape(TOPIC_CHARACTERS)}]+")
#: event names the server keeps for itself
RESERVED_EVENT_PREFIX = "sse-fast-"


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
