"""Declared streams for the benchmarks (``--schemas benches.typed_example:streams``):
the BuildAmp shape (comments per item, notifications per user, system alerts).
None of them matches the notification benchmark's ``user/<n>`` topics."""

from __future__ import annotations

import msgspec

from sse_fast.schemas import Stream


class CommentAdded(msgspec.Struct):
    comment_id: int
    text: str
    edited: bool = False


class TaskComplete(msgspec.Struct):
    task_id: str
    result: str


class SystemAlert(msgspec.Struct):
    level: str
    message: str


streams = [
    Stream("comments", "item:{item_id}", [CommentAdded]),
    Stream("notifications", "user:{user_id:int}", [TaskComplete]),
    Stream("alerts", "system/alerts", [SystemAlert]),
]
