"""The relay broker: several workers of one server, one sequencer process.

With ``--workers N`` the ``serve`` command starts the relay (``run_relay``) on
a Unix socket before Granian starts its workers, and its main process keeps it
running (``RelaySupervisor``: a relay that dies is started again, with
backoff). Each worker's hub has a ``RelayBroker`` that connects at lifespan
startup. A worker that accepts ``POST /publish`` validates the events and
sends them to the relay; the relay sequences them (positions, ids, each frame
encoded once) and delivers the encoded frames to all workers (the publishing
one included) in one order, then acknowledges with the ids. Every worker thus
holds identical rings, so ``Last-Event-ID`` resumes on whichever worker a
client reconnects to. No external service is involved.

The promises are those of the broker contract (``brokers/__init__.py``):

* A worker that starts (first start, or respawned after a crash) is replayed
  the relay's log of recent events (``relay_history_frames`` /
  ``relay_history_bytes``) before it serves, and claims history from the
  oldest event replayed.
* A worker that loses the relay keeps its streams open, refuses publishes with
  503 and ``Retry-After``, and reconnects (backoff up to a second). If the
  relay is the same one and its log reaches back to the worker's newest
  position, the worker is replayed what it missed and nothing is lost. If the
  relay was restarted (a new sequence) or its log does not reach back, the
  worker's claims restart where the relay's replay starts, and its open
  streams are sent ``sse-fast-missed`` (``relay-restarted`` or
  ``relay-log-too-short``) in place.
* ``/metrics`` and ``/stats`` gather every worker's figures through the relay.

Where each part lives: the wire format in ``wire.py``, the relay process (the
sequencer, its log and the gathering of figures) in ``process.py``, a worker's
side (``RelayBroker``) in ``broker.py``, and keeping the relay running in
``supervisor.py``.
"""

from __future__ import annotations

from .broker import RECONNECT_MAX_DELAY, RETRY_AFTER, RelayBroker
from .process import GATHER_TIMEOUT, REPLAY_CHUNK, Relay, run_relay, serve_relay
from .wire import (
    MAX_MESSAGE,
    pack,
    pack_delivery,
    pack_publish,
    read_message,
    unpack_delivery,
    unpack_publish,
)

__all__ = [
    "GATHER_TIMEOUT",
    "MAX_MESSAGE",
    "RECONNECT_MAX_DELAY",
    "REPLAY_CHUNK",
    "RETRY_AFTER",
    "Relay",
    "RelayBroker",
    "pack",
    "pack_delivery",
    "pack_publish",
    "read_message",
    "run_relay",
    "serve_relay",
    "unpack_delivery",
    "unpack_publish",
]
