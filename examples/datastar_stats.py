"""Live platform statistics and an activity feed, driven by Datastar.

The page holds its numbers in Datastar signals; every 3 s the hub sends a
``datastar-patch-signals`` event (an RFC 7386 merge patch of those signals) to
topic ``demo/stats``. Each new activity is a ``datastar-patch-elements`` event
on ``demo/feed`` carrying the whole ``<ul id="feed">``, newest first, at most 10
items, which Datastar morphs into the page (only the new item and the one
that fell off change). A page that missed events (after the server
restarted, say: without Redis the edge keeps no history, and Datastar
ignores the edge's ``sse-fast-missed``) is right again with the next one,
which a prepend-and-remove pair would not do.

The page is rendered with the figures and feed as of the last event published
(``shown``: recorded with that event's id once the hub took it) and subscribes
after that id (``lastEventId=`` in its URL), so nothing published between the
render and the subscription is missed or repeated.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import random
import time
from collections import deque
from typing import Any

import orjson

from sse_fast.frames import datastar_patch_elements, datastar_patch_signals
from sse_fast.hub import Hub

from ._frames import request

STATS, FEED = "demo/stats", "demo/feed"
STATS_EVERY = 3.0
ACTIVITY_EVERY = 1.5
FEED_LENGTH = 10
_PEOPLE = ("Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Radia")
_DOINGS = (
    "signed up",
    "published a post",
    "commented on a post",
    "starred a project",
    "opened an issue",
    "merged a pull request",
)


class PlatformStats:
    """Simulated figures of a platform, and its recent activity."""

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self.signals: dict[str, Any] = {
            "users": 1200,
            "online": 87,
            "posts": 5400,
            "updated": time.strftime("%H:%M:%S"),
        }
        self.numbers = itertools.count(1)
        self.feed: deque[tuple[int, str]] = deque(maxlen=FEED_LENGTH)
        #: (id of the last event published, figures, feed items) as of that event
        self.shown: tuple[str | None, dict[str, Any], list[str]] = (None, dict(self.signals), [])

    def published(self, last_id: str) -> None:
        """The hub took the events up to ``last_id``: pages show this state now."""
        self.shown = (last_id, dict(self.signals), [item for _, item in reversed(self.feed)])

    def tick(self) -> dict[str, Any]:
        """New figures (the merge patch: only what changed)."""
        r = self.random
        patch = {
            "users": self.signals["users"] + r.randint(0, 3),
            "online": max(1, self.signals["online"] + r.randint(-5, 5)),
            "posts": self.signals["posts"] + r.randint(0, 8),
            "updated": time.strftime("%H:%M:%S"),
        }
        self.signals.update(patch)
        return patch

    def activity(self) -> str:
        """A new activity: the feed's ``<ul>`` with it first."""
        number = next(self.numbers)
        who, what = self.random.choice(_PEOPLE), self.random.choice(_DOINGS)
        item = (
            f'<li id="activity-{number}" class="activity">'
            f"<time>{time.strftime('%H:%M:%S')}</time> "
            f"<b>{html.escape(who)}</b> {html.escape(what)}</li>"
        )
        self.feed.append((number, item))
        return feed_list([item for _, item in reversed(self.feed)])


def feed_list(items: list[str]) -> str:
    """The feed's element, as the page has it."""
    return '<ul id="feed" class="feed">' + "".join(items) + "</ul>"


async def run(hub: Hub, stats: PlatformStats, pace: float = 1.0) -> None:
    """Publish figures every ``STATS_EVERY`` s and activities every ``ACTIVITY_EVERY`` s
    (divided by ``pace``)."""
    stats.published(str(hub.last_position))  # the state before any event of ours
    next_stats = time.monotonic() + STATS_EVERY / pace
    while True:
        await asyncio.sleep(ACTIVITY_EVERY / pace)
        events = [request(FEED, datastar_patch_elements(stats.activity()))]
        if time.monotonic() >= next_stats:
            next_stats += STATS_EVERY / pace
            events.append(request(STATS, datastar_patch_signals(stats.tick())))
        stats.published((await hub.publish(events))[-1])


def page_context(stats: PlatformStats) -> dict[str, str]:
    """The page's figures, feed, and the ``lastEventId`` query (empty before
    ``run`` started: then there is nothing to miss)."""
    last_id, signals, feed = stats.shown
    return {
        "SIGNALS": html.escape(orjson.dumps(signals).decode()),
        "FEED": feed_list(feed),
        "RESUME": "" if last_id is None else f"&lastEventId={last_id}",
    }
