"""sse_fast's own words on the wire, built and read in this one place.

Beside the events publishers send, a stream of ours carries two control events,
both with a JSON object as ``data`` whose ``reason`` says why:

* ``sse-fast-missed`` (``MISSED``): events before this one could not be
  delivered; what follows is complete again. ``{"reason": ..., "last_event_id":
  ...}``, the id the server could not resume from or null, and its ``id`` is the
  position it stands at (resuming from it is a resume from there; on a stream
  over several partitions of the broker, the stream's cursor, like its other
  ids). A break of one partition's sequence adds ``partition`` (a broker of
  several partitions only): the streams of that partition's topics get it, no
  others. Reasons:
  ``unknown`` and ``evicted`` (a ``Last-Event-ID`` the server cannot resume from,
  the stream's first event), ``relay-restarted``, ``relay-log-too-short``,
  ``redis-restarted``, ``redis-lost-writes``, ``redis-history-trimmed`` (the
  worker's broker lost events: in their place among the events) and
  ``upstream-missed`` (mirror mode: the upstream could not resume us; with
  ``upstream_reason``).
* ``sse-fast-disconnect`` (``DISCONNECT``): the server ends this stream, and
  this is its last event. Reasons: ``draining`` (a graceful shutdown; sent with a
  jittered ``retry``; also the only event of a stream asked for while
  draining), ``starting`` (the only event of a stream asked for while the server
  restores its history: come back after its ``retry``), ``lagged`` (the client
  fell further behind than the history holds; with ``lost``, how many events),
  ``token-expired``; and the only event of a stream refused for now, which comes
  back after its ``retry``: ``max-connections``, ``max-connections-per-ip``,
  ``connect-rate`` (the server's stream limits) and ``broker-unavailable``
  (``message`` says what to do; a browser's ``EventSource`` stops for good on a
  429 or 503, so these are answered with a 200).

A stream can also end without a frame: ``stalled`` (a write stayed blocked),
``error``, ``client-disconnected`` and ``server-stopped``; the webhooks report
those with the others (``Reason``).

A stream told to come back (``starting``, ``draining`` and the refusals for now) has
the response header ``SSE-Fast-Come-Back`` (``COME_BACK_HEADER``) with the reason, so
a client knows from the response head that no stream follows.

The response header ``SSE-Fast-Resume`` (``RESUME_HEADER``) says what became of
a ``Last-Event-ID``: ``none`` (none was sent), ``resumed``, ``unknown`` or
``evicted`` (``Resume``). Event names starting with ``sse-fast-``
(``RESERVED_EVENT_PREFIX``) are ours: publishers may not use them.

``read_control`` reads a control event back (the client, the locust users,
yours). The server builds the frames from these words in ``_control_frames.py``
(``missed_frame``, ``disconnect_frame``), from these constants: no other
module spells them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ._core.request import RESERVED_EVENT_PREFIX

__all__ = [
    "COME_BACK_HEADER",
    "DISCONNECT",
    "MISSED",
    "RESERVED_EVENT_PREFIX",
    "RESUME_HEADER",
    "Control",
    "Reason",
    "Resume",
    "read_control",
]

#: the event type telling a stream that events were missed (``data``: ``missed_data``)
MISSED: Final = "sse-fast-missed"
#: the event type of the last frame of a stream the server ends (``data``: its ``reason``)
DISCONNECT: Final = "sse-fast-disconnect"
#: the response header saying what became of ``Last-Event-ID`` (a ``Resume`` value)
RESUME_HEADER: Final = "SSE-Fast-Resume"
#: the response header of a stream told to come back later (its ``Reason``)
COME_BACK_HEADER: Final = "SSE-Fast-Come-Back"


class Resume:
    """What became of a ``Last-Event-ID`` (the ``SSE-Fast-Resume`` header)."""

    NONE: Final = "none"
    RESUMED: Final = "resumed"
    UNKNOWN: Final = "unknown"
    EVICTED: Final = "evicted"


class Reason:
    """Why events were missed, or why a stream ended."""

    # sse-fast-missed
    UNKNOWN: Final = Resume.UNKNOWN
    EVICTED: Final = Resume.EVICTED
    RELAY_RESTARTED: Final = "relay-restarted"
    RELAY_LOG_TOO_SHORT: Final = "relay-log-too-short"
    REDIS_RESTARTED: Final = "redis-restarted"
    REDIS_LOST_WRITES: Final = "redis-lost-writes"
    REDIS_HISTORY_TRIMMED: Final = "redis-history-trimmed"
    UPSTREAM_MISSED: Final = "upstream-missed"
    #: the machine stopped before these events reached the data directory's disk
    LOST_WRITES: Final = "lost-writes"
    # sse-fast-disconnect
    DRAINING: Final = "draining"
    LAGGED: Final = "lagged"
    TOKEN_EXPIRED: Final = "token-expired"
    # sse-fast-disconnect, the only event of a stream told to come back later
    STARTING: Final = "starting"
    MAX_CONNECTIONS: Final = "max-connections"
    MAX_CONNECTIONS_PER_IP: Final = "max-connections-per-ip"
    CONNECT_RATE: Final = "connect-rate"
    BROKER_UNAVAILABLE: Final = "broker-unavailable"
    # ends without a frame (webhooks report them)
    STALLED: Final = "stalled"
    ERROR: Final = "error"
    CLIENT_DISCONNECTED: Final = "client-disconnected"
    SERVER_STOPPED: Final = "server-stopped"


@dataclass(frozen=True)
class Control:
    """A control event read back: ``kind`` is ``MISSED`` or ``DISCONNECT``;
    ``last_event_id`` is a missed event's (None otherwise); ``details`` the rest
    of what the server said (``lost``, ``upstream_reason``, ...)."""

    kind: str
    reason: str
    last_event_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def read_control(event: str, data: str) -> Control | None:
    """The control event ``event``/``data`` is, or None: another event, or one
    of our names whose data is not the JSON object it should be."""
    if event != MISSED and event != DISCONNECT:
        return None
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    reason = str(body.get("reason", ""))
    last = body.get("last_event_id") if event == MISSED else None
    skip = ("reason", "last_event_id") if event == MISSED else ("reason",)
    details = {key: value for key, value in body.items() if key not in skip}
    return Control(event, reason, None if last is None else str(last), details)
