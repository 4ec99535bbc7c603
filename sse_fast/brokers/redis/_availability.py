"""Whether a member can use Redis now: one object says up or down.

Two things must hold for a member to be up (``available``): its subscription
is live (subscribed and resynced: the feed says so, ``subscribed`` and
``subscription_lost``), and Redis answered the last command it was sent (a
publish, a probe, a history read: ``answered`` and ``unanswered``). A member
starts down (not subscribed yet) and answering (nothing was refused yet).

How long it has been down (``down_for``, ``/healthz``) counts from the first
time it was asked while down, or from the start; a live subscription, or an
answer while up, ends the count.
"""

from __future__ import annotations

import time

__all__ = [
    "Availability",
]


class Availability:
    """Up or down: the subscription's liveness and whether Redis answers, changed only here."""

    def __init__(self) -> None:
        self._live = False
        self._answers = True
        self._down_since: float | None = time.monotonic()

    @property
    def up(self) -> bool:
        """Whether the subscription is live and Redis answered the last command."""
        return self._live and self._answers

    @property
    def live(self) -> bool:
        """Whether the subscription is live (subscribed and resynced)."""
        return self._live

    @property
    def answers(self) -> bool:
        """Whether Redis answered the last command (a publish is tried only then)."""
        return self._answers

    def subscribed(self) -> None:
        """The subscription is live: messages flow to the member."""
        self._live = True
        self._down_since = None

    def subscription_lost(self) -> None:
        """The subscription was lost, or is being closed."""
        self._live = False

    def answered(self) -> None:
        """Redis answered a command."""
        self._answers = True

    def unanswered(self) -> bool:
        """Redis did not answer a command; whether this is news (it answered the one before)."""
        news = self._answers
        self._answers = False
        return news

    def down_for(self) -> float:
        """Seconds since Redis became unavailable (0 while it is available)."""
        if self.up:
            self._down_since = None
            return 0.0
        if self._down_since is None:
            self._down_since = time.monotonic()
        return time.monotonic() - self._down_since
