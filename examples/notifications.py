"""A user's notifications by pattern: one ``EventSource`` of ``user/42/*``.

Notifications go to topics per user and kind, ``user/<id>/inbox``,
``user/<id>/orders``, ``user/<id>/likes``, and to a topic per mention,
``user/<id>/mentions/<n>``, created as it is published. The page subscribes to
``user/42/*`` once: it gets every topic of user 42, the new ones too, and none
of user 43's, which are published beside them. Each event is a
``notification`` with ``{"n", "topic", "text"}``; on a lost connection the
browser reconnects with ``Last-Event-ID`` and the edge resumes every topic of
the pattern, those created meanwhile included.
"""

from __future__ import annotations

import asyncio
import itertools

from sse_fast.hub import Hub
from sse_fast.publishing import PublishRequest

PATTERN = "user/42/*"
EVERY = 1.0
KINDS = ("inbox", "orders", "likes", "mentions")


async def run(hub: Hub, pace: float = 1.0) -> None:
    for n in itertools.count(1):
        await asyncio.sleep(EVERY / pace)
        kind = KINDS[n % len(KINDS)]
        for user in (42, 43):
            topic = f"user/{user}/{kind}" + (f"/{n}" if kind == "mentions" else "")
            note = {"n": n, "topic": topic, "text": f"{kind} #{n} for user {user}"}
            await hub.publish([PublishRequest((topic,), note, event="notification")])
