"""The local broker: one worker sequences its own publishes (the default)."""

from __future__ import annotations

from typing import Any

from .._core import EncodeError
from ..publishing import PublishError, PublishRequest
from . import Broker
from .sequencing import RecentIds, first_position, sequence_once

__all__ = [
    "LocalBroker",
]


class LocalBroker(Broker):
    """Sequences in this process and delivers at once, synchronously."""

    def __init__(self) -> None:
        super().__init__()
        self.first_position = first_position()
        self.next_position = self.first_position
        self.recent = RecentIds()

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        return self.publish_nowait(requests, accepted_at)

    def publish_nowait(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        try:
            items, ids = sequence_once(requests, self.next_position, accepted_at, self.recent)
        except EncodeError as exc:
            raise PublishError(str(exc)) from None
        self.next_position += len(items)
        if items:
            self.deliver(items)
        return ids

    def stats(self) -> dict[str, Any]:
        return {}
