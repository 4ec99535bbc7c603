"""Figures: what one worker reports for the server-wide ``/metrics``, ``/stats``
and ``/presence`` answers (``app/_operations.py`` gathers every worker's through
the broker and adds them up), and presence across workers and nodes."""

from __future__ import annotations

import itertools
import logging
import os
from typing import TYPE_CHECKING, Any

from .._core import HAS_EXTENSIONS
from .._publish_checks import check_topic
from ._cursor import format_cursor
from ._presence import add_up
from ._presence import figures as presence_figures

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Figures"]

log = logging.getLogger("sse_fast")


class Figures:
    """The figures of ``hub``'s worker."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def of_topic(self, name: str) -> dict[str, Any]:
        """This worker's presence figures of one topic."""
        return presence_figures(self.hub.topics.by_name.get(name))

    async def presence(self, topic: str) -> dict[str, Any]:
        """Who is subscribed to ``topic``: ``{"subscribers", "subjects", "scope",
        "workers"}``. Every node's figures (``scope`` ``cluster``) for a topic of
        ``presence_topics`` on Redis; else every worker of this node (``node``)."""
        hub = self.hub
        check_topic(topic, hub.settings)
        if hub.presence_news.tracks(topic):
            try:
                parts = await hub.broker.read_presence(topic)
            except Exception as exc:  # Redis away: what this node knows
                log.warning("presence of %s from this node only: %s", topic, exc)
                parts = None
            if parts is not None:
                return {**add_up(parts), "scope": "cluster", "workers": len(parts)}
        parts = await hub.gather({"what": "presence", "topic": topic})
        return {
            **add_up(parts),
            "scope": "node",
            "workers": len(parts),  # fewer than expected: some did not answer
            "workers_expected": hub.settings.workers,
        }

    def report(self, query: dict[str, Any]) -> dict[str, Any]:
        """This worker's figures for a server-wide ``/metrics`` (``{"what":
        "metrics"}``), ``/stats`` (``{"what": "stats", "connections": bool,
        "offset": int, "limit": int}``), ``/presence`` (``{"what": "presence",
        "topic": name}``) or ``/readyz`` (``{"what": "ready"}``: whether its start is
        pending) answer; see ``app/_operations.py``."""
        hub = self.hub
        if query.get("what") == "ready":  # /readyz, until every worker has started once
            figures: dict[str, Any] = {"starting": hub.starting}
        elif query.get("what") == "presence":
            figures = self.of_topic(str(query.get("topic", "")))
        elif query.get("what") == "stats":
            figures = self.stats(
                with_connections=bool(query.get("connections")),
                offset=int(query.get("offset", 0)),
                limit=int(query.get("limit", 1000)),
            )
        else:
            figures = {
                "metrics": hub.metrics.snapshot(),
                "connections_open": len(hub.subscriptions),
                "topics": len(hub.topics),
                **hub.streams.patterns.figures(),
                "subscribers": hub.topics.busiest(100),
                "broker_up": hub.broker.available,
                "broker_partitions_down": hub.broker.partitions_down,
                **hub.topics.budget_figures(),
            }
            for add in hub.reports:
                figures.update(add())
        figures["pid"] = os.getpid()
        return figures

    def stats(
        self, with_connections: bool = False, offset: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        """Figures for ``/stats``: totals, and one page (``offset``, ``limit``) of the
        topics and, with ``with_connections``, of the connections. ``next_offset``
        is the offset of the next page, or None after the last."""
        hub = self.hub
        topics = hub.topics
        more = offset + limit < len(topics)
        out: dict[str, Any] = {
            "connections": len(hub.subscriptions),
            "topics_total": len(topics),
            "topics_with_history": topics.with_history,
            "topics": topics.page(offset, limit),
            **topics.budget_figures(),
            "last_id": self._last_id(),
            "draining": hub.draining,
            "starting": hub.starting,
            "eager_send": hub.send_style.eager,
            "native_core": HAS_EXTENSIONS,
        }
        if with_connections:
            now = hub.clock()
            page = itertools.islice(hub.subscriptions.values(), offset, offset + limit)
            out["connection_list"] = [
                {
                    "id": s.id,
                    "client": s.client,
                    "topics": [t.name for t in s.topics],
                    "patterns": list(s.patterns),
                    "state": s.state,
                    "connected_seconds": round(now - s.connected_at, 3),
                    "behind": s.behind(),
                    # its content coding, and what its bytes are now (``_coding.py``)
                    "coding": None if s.coded is None else s.coded.coding.name,
                    "compression": None if s.coded is None else s.coded.mode(s),
                }
                for s in page
            ]
            more = more or offset + limit < len(hub.subscriptions)
        out["next_offset"] = offset + limit if more else None
        out.update(hub.broker.stats())
        return out

    def _last_id(self) -> str:
        """The id a new stream over every topic would start at: the newest position, or
        with several partitions the cursor of each one's newest (``_cursor.py``)."""
        hub = self.hub
        partitions = hub.broker.partitions
        if partitions == 1:
            return str(hub.last_position)
        return format_cursor({p: hub.last_position_of(p) for p in range(partitions)})
