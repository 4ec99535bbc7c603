"""Admission: who the client is, and whether it may open a stream or publish now.

* Client address (``_forwarded.py``): the peer address, or, behind a trusted
  proxy (``trusted_proxies``), the nearest untrusted hop of every line of
  ``X-Forwarded-For`` (or ``Forwarded``), read right to left.
* Stream limits: ``max_connections`` streams per worker (503), at most
  ``max_connections_per_ip`` open streams (429) and ``connect_rate_per_ip``
  new ones per second (429) per client address. A stream holds its per-IP slot
  until its handler returns, which for a client that stopped reading is only
  once its connection is cut (``hub/_closing.py``).
  A stream refused for its credential or its patterns (401, 403, or a pattern
  too complex to check, 400) counts as ``REFUSAL_WEIGHT`` connects: a client
  that keeps asking for what it may not have reaches its connect rate that many
  times sooner, which bounds the work its refusals cost a worker.
* Publish rate: ``publish_rate`` publishes per second per credential (429).
Refusals say what limit was hit and carry ``Retry-After``.
"""

from __future__ import annotations

import time
from typing import Any

from ..settings import LimitSettings
from ._forwarded import ClientAddress
from ._http import HTTPError, retry_after

__all__ = ["REFUSAL_WEIGHT", "Admission", "ClientAddress", "TokenBucket"]

#: the connects a stream refused for its credential or patterns counts as (itself included)
REFUSAL_WEIGHT = 10


class TokenBucket:
    """Per-key token buckets (``rate`` per second, ``burst`` at most), bounded in size."""

    def __init__(
        self, rate: float, burst: float, max_keys: int = 100_000, clock: Any = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 when allowed, else seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
            return 0.0
        self._buckets[key] = (tokens, now)
        return float((1.0 - tokens) / self.rate)

    def charge(self, key: str, tokens: float) -> None:
        """Take ``tokens`` more from ``key``'s bucket, into debt down to minus its burst
        (a key that keeps being charged waits for its debt to refill too)."""
        if self.rate <= 0:
            return
        now = self.clock()
        held, last = self._buckets.get(key, (self.burst, now))
        held = min(self.burst, held + (now - last) * self.rate)
        self._buckets[key] = (max(-self.burst, held - tokens), now)


class Admission:
    """The limits on opening streams and publishing, for one worker."""

    def __init__(self, limits: LimitSettings) -> None:
        self.limits = limits
        self.streams_by_ip: dict[str, int] = {}
        self.connect_limiter = TokenBucket(
            limits.connect_rate_per_ip, limits.connect_rate_per_ip * 2
        )
        self.publish_limiter = TokenBucket(limits.publish_rate, limits.publish_rate * 2)

    def admit_stream(self, ip: str, open_streams: int) -> None:
        """Refuse a new stream from ``ip`` over a limit; else take its slot (give
        it back with ``release_stream``)."""
        limits = self.limits
        limit = limits.max_connections
        if limit and open_streams >= limit:
            raise HTTPError(
                503,
                f"connection limit reached ({limit} streams on this worker); retry later",
                retry_after(5),
                reason="max_connections",
            )
        per_ip = limits.max_connections_per_ip
        if per_ip and self.streams_by_ip.get(ip, 0) >= per_ip:
            raise HTTPError(
                429,
                f"too many streams from {ip} (max_connections_per_ip {per_ip})",
                retry_after(5),
                reason="max_connections_per_ip",
            )
        wait = self.connect_limiter.take(ip)
        if wait:
            raise HTTPError(
                429,
                f"too many connection attempts from {ip}; slow down",
                retry_after(wait),
                reason="connect_rate",
            )

    def refused_stream(self, ip: str) -> None:
        """A stream of ``ip``, admitted by ``admit_stream``, was refused for its
        credential or its patterns: it counts as ``REFUSAL_WEIGHT`` connects."""
        self.connect_limiter.charge(ip, REFUSAL_WEIGHT - 1)

    def hold_stream(self, ip: str) -> None:
        """Count an open stream of client ``ip`` (``max_connections_per_ip``)."""
        self.streams_by_ip[ip] = self.streams_by_ip.get(ip, 0) + 1

    def release_stream(self, ip: str) -> None:
        """Uncount a closed stream of client ``ip``."""
        remaining = self.streams_by_ip.get(ip, 1) - 1
        if remaining:
            self.streams_by_ip[ip] = remaining
        else:
            self.streams_by_ip.pop(ip, None)

    def admit_publish(self, identity: str) -> None:
        """Refuse a publish over the credential's rate."""
        wait = self.publish_limiter.take(identity)
        if wait:
            raise HTTPError(
                429,
                f"publish rate limit reached for this credential ({self.limits.publish_rate:g}/s)",
                retry_after(wait),
                reason="publish_rate",
            )
