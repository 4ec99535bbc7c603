"""The hub: topics, fan-out, resume, heartbeats and drain for one worker.

Its parts, one per section of its theory of operation (each module's
docstring is that section):

* ``topics.py`` - storage: topics, rings, the position of each retained frame;
* ``fanout.py`` - fan-out: the coalesced flush, catch-up of slow streams, lag;
* ``resume.py`` - resume: ``Last-Event-ID`` to positions, ``unknown``/``evicted``,
  and a new stream's first bytes;
* ``streams.py`` - the open streams: the one place they join and leave, and the
  listeners told (presence, webhooks, metrics);
* ``breaks.py`` - a broker's lost events said to the streams in their place;
* ``closing.py`` - server-side closes, cuts of non-readers, client disconnects;
* ``lifecycle.py`` - heartbeats, sweeping, drain;
* ``server.py`` - the server adapter: eager-send detection, the disconnect watch;
* ``subscription.py`` - one stream and its place in its topics' sets;
* ``presence.py`` - presence figures per topic and subject, the news of joins and leaves;
* ``figures.py`` - what the worker reports for ``/metrics``, ``/stats``, ``/presence``;
* ``catalogue.py`` - the metrics table: each metric declared once, with its figure;
* ``metrics.py`` - the worker's counters and the whole server's Prometheus text;
* ``webhooks.py`` - connects and disconnects POSTed, signed, at least once;
* ``together.py`` - the small publishes of one turn of the loop in one broker call;
* ``hub.py`` - the ``Hub`` that holds them: ``publish``, ``attach``, ``stats``.

Sequencing (positions and ids) is the broker's (``sse_fast/brokers``).
"""

from __future__ import annotations

from ..brokers.sequencing import Sequenced
from ..publishing import PublishError, PublishRequest
from .hub import SSE_HEADERS, Hub
from .subscription import Subscription

__all__ = ["SSE_HEADERS", "Hub", "PublishError", "PublishRequest", "Sequenced", "Subscription"]
