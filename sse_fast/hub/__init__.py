"""The hub: topics, fan-out, resume, heartbeats and drain for one worker.

Its parts, one per section of its theory of operation (each module's
docstring is that section):

* ``_topics.py`` - storage: topics, rings, the position of each retained frame;
* ``_fanout.py`` - fan-out: the coalesced flush, catch-up of slow streams, lag;
* ``_resume.py`` - resume: ``Last-Event-ID`` to positions, ``unknown``/``evicted``,
  and a new stream's first bytes;
* ``_opening.py`` - a stream's opening: its topics prepared, made at its resume point;
* ``_streams.py`` - the open streams: the one place they join and leave, and the
  listeners told (presence, webhooks, metrics);
* ``_breaks.py`` - a broker's lost events said to the streams in their place;
* ``_closing.py`` - server-side closes, cuts of non-readers, client disconnects;
* ``_lifecycle.py`` - heartbeats, sweeping, drain;
* ``_disconnect_watch.py`` - each stream's wait for the client leaving (``http.disconnect``);
* ``_subscription.py`` - one stream and its place in its topics' sets;
* ``_presence.py`` - presence figures per topic and subject, the news of joins and leaves;
* ``_figures.py`` - what the worker reports for ``/metrics``, ``/stats``, ``/presence``;
* ``_catalogue.py`` - the metrics table: each metric declared once, with its figure;
* ``_metrics.py`` - the worker's counters and the whole server's Prometheus text;
* ``_webhooks.py`` - connects and disconnects POSTed, signed, at least once;
* ``_publish_group.py`` - the small publishes of one turn of the loop in one broker call;
* ``_hub.py`` - the ``Hub`` that holds them: ``publish``, ``attach``, ``stats``.

Sequencing (positions and ids) is the broker's (``sse_fast/brokers``).

Public here is what embedding the hub takes: ``Hub``, the ``PublishRequest``
it publishes and the ``PublishError`` it refuses with, the ``Subscription``
``attach`` returns, and the ``Sequenced`` events a broker of your own delivers.
"""

from __future__ import annotations

from ..brokers._sequencing import Sequenced
from ..publishing import PublishError, PublishRequest
from ._hub import Hub
from ._subscription import Subscription

__all__ = ["Hub", "PublishError", "PublishRequest", "Sequenced", "Subscription"]
