"""Declared streams for the tests (``--schemas tests.support.typed_streams:streams``), in the
BuildAmp style: comments per item, notifications per user, system alerts, and a pattern
stream: a user's activity on every topic under ``user/<id>/``."""

from __future__ import annotations

from typing import Literal

import msgspec

from sse_fast.schemas import Stream


class Author(msgspec.Struct):
    id: int
    name: str


class CommentAdded(msgspec.Struct):
    comment_id: int
    text: str
    author: Author
    tags: list[str] = []
    edited: bool = False


class CommentDeleted(msgspec.Struct):
    comment_id: int


class TaskComplete(msgspec.Struct, forbid_unknown_fields=True):
    task_id: str
    result: str
    seconds: float | None = None


class SystemAlert(msgspec.Struct):
    level: Literal["info", "warning", "critical"]
    message: str


class ActivityNote(msgspec.Struct):
    kind: str
    text: str


comments = Stream(
    "comments", "item:{item_id}", [CommentAdded, CommentDeleted], description="comments on an item"
)
notifications = Stream("notifications", "user:{user_id:int}", [TaskComplete])
alerts = Stream("alerts", "system/alerts", [SystemAlert])
activity = Stream("activity", "user/{user_id:int}/*", [ActivityNote])
streams = [comments, notifications, alerts]
#: the streams and the pattern stream (the generated clients' tests)
with_pattern = [*streams, activity]
