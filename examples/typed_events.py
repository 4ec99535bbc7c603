"""Typed channels end to end, in the BuildAmp style: comments per item,
notifications per user, system alerts.

The events are declared here as msgspec Structs on channel patterns and
registered with the edge's hub (``Hub.declare``): a publish to
``item:<id>``, ``user:<n>`` or ``system/alerts`` that does not fit is refused
with the field named. The page's client is generated from these declarations
(``sse-fast codegen --lang typescript``) and compiled with TypeScript
(``examples.vendor.typed_client``): a renamed field here breaks that build,
not the page.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Literal

import msgspec

from sse_fast.hub import Hub
from sse_fast.schemas import Stream


class CommentAdded(msgspec.Struct):
    comment_id: int
    author: str
    text: str


class TaskComplete(msgspec.Struct):
    task_id: str
    result: str
    seconds: float


Level = Literal["info", "warning", "critical"]
LEVELS: tuple[Level, ...] = ("info", "warning", "critical")


class SystemAlert(msgspec.Struct):
    level: Level
    message: str


comments = Stream("comments", "item:{item_id}", [CommentAdded], description="comments on an item")
notifications = Stream("notifications", "user:{user_id:int}", [TaskComplete])
alerts = Stream("alerts", "system/alerts", [SystemAlert])
streams = [comments, notifications, alerts]

_AUTHORS = ("Ada", "Grace", "Linus", "Barbara")
_TEXTS = ("Looks good to me.", "Can we ship it?", "One more test, please.", "Merged.")


async def run(hub: Hub, pace: float = 1.0, seed: int | None = None) -> None:
    """A comment on item 1 every 2 s, a finished task for user 7 every 3rd, an
    alert every 5th (divided by ``pace``)."""
    r = random.Random(seed)
    for n in itertools.count(1):
        await asyncio.sleep(2.0 / pace)
        events = [
            comments.request(
                CommentAdded(comment_id=n, author=r.choice(_AUTHORS), text=r.choice(_TEXTS)),
                item_id=1,
            )
        ]
        if n % 3 == 0:
            task = TaskComplete(
                task_id=f"report-{n}", result="ok", seconds=round(r.uniform(1, 9), 1)
            )
            events.append(notifications.request(task, user_id=7))
        if n % 5 == 0:
            level: Level = r.choice(LEVELS)
            events.append(alerts.request(SystemAlert(level=level, message=f"check {n}")))
        await hub.publish(events)
