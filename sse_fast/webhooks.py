"""Webhooks: a signed POST when a stream connects and when it ends.

* **What.** For every stream on a topic of ``webhook_topics`` (all by default)
  an event ``connect`` when it opens and ``disconnect`` when it ends, with the
  reason: ``client-disconnected`` (the client went away), ``lagged`` (it fell
  behind the history), ``stalled`` (a write stayed blocked), ``token-expired``,
  ``draining`` (the server stopping), ``error`` (a server fault) or
  ``server-stopped`` (the stream's handler was cancelled). Each event::

      {"id": "<32 hex>", "type": "connect" | "disconnect", "at": <unix time>,
       "node": "<node>", "worker": <pid>, "stream": <id, per worker>,
       "topics": [...], "subject": "<JWT sub>" | null, "client": "ip:port",
       "reason": "...", "connected_seconds": 1.5}          # disconnect only

* **How.** Events are batched: every ``webhook_interval`` seconds each URL is
  sent one POST of the events since the last (at most ``BATCH`` per POST)::

      {"batch": "<32 hex>", "sent_at": <unix time>, "dropped": 0, "events": [...]}

  with ``Content-Type: application/json``, ``SSE-Fast-Timestamp: <unix
  seconds>`` and ``SSE-Fast-Signature: v1=<hex>``, the HMAC-SHA256 of
  ``"<timestamp>.<body>"`` keyed with ``webhook_secret``. A receiver checks the
  signature and that the timestamp is within its replay window (``verify``
  does both) and answers 2xx.
The sending side (batches, retries, bounds) is the hub's:
``sse_fast/hub/_webhooks.py``. This module is what a receiver needs, and loads
nothing else of sse_fast:

* **At least once.** A batch that gets no 2xx (any other status, 3xx and
  4xx included, a refused or timed out connection after ``webhook_timeout``)
  is sent again, the same batch with a new timestamp, after 0.5 s doubling to
  ``webhook_max_delay`` (with jitter), until it is taken; the URL's later
  events wait behind it. So a receiver may see an event twice: event ids are
  unique, deduplicate on them.
* **Bounded.** Events wait in memory, at most ``webhook_max_pending`` per URL;
  while a receiver stays down, further events are dropped and counted, and
  the next batch it takes says how many in ``dropped`` (and
  ``sse_fast_webhook_dropped_total`` counts them). On shutdown the workers try
  for ``SHUTDOWN_GRACE`` seconds to deliver what waits, then log what is lost.
* **Never on the fan-out path.** A stream's start or end appends one dict to a
  deque per URL; sending happens in one task per URL.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookError",
    "sign",
    "verify",
]

#: the header carrying a webhook's signature (``sign``): ``v1=<hex>``
SIGNATURE_HEADER = "SSE-Fast-Signature"
#: the header carrying the time a webhook was sent (unix seconds), which the signature covers
TIMESTAMP_HEADER = "SSE-Fast-Timestamp"


class WebhookError(ValueError):
    """A webhook a receiver must refuse (``verify``): what is wrong with it."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``SSE-Fast-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    window: float = 300.0,
    now: float | None = None,
) -> dict[str, Any]:
    """For receivers: the batch of a webhook whose signature is ``secret``'s and
    whose timestamp is within ``window`` seconds of now; ``WebhookError`` saying
    what is wrong otherwise. ``headers`` is looked up case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get(TIMESTAMP_HEADER.lower())
    signature = lower.get(SIGNATURE_HEADER.lower())
    if timestamp is None or signature is None:
        raise WebhookError(f"no {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise WebhookError(f"{TIMESTAMP_HEADER} is not a whole number of seconds")
    if not hmac.compare_digest(
        sign(secret, timestamp, body).encode(), signature.encode("utf-8", "replace")
    ):
        raise WebhookError("the signature does not match (another secret, or a changed body)")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > window:
        raise WebhookError(f"sent {age:.0f} s from now, outside the {window:g} s window")
    batch: dict[str, Any] = orjson.loads(body)
    return batch
