"""Presence across nodes, in Redis: now ``brokers/redis/_presence.py``; this name
stays importable."""

from __future__ import annotations

from .redis._presence import KEY_TTL, STALE, RedisPresence

__all__ = [
    "KEY_TTL",
    "STALE",
    "RedisPresence",
]
