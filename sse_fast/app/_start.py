"""A worker's start under ``sse-fast serve``: answering from the first second.

Theory of operation
-------------------
Granian gives a worker requests only once its ASGI lifespan startup is
complete. Starting the hub restores the history from the data directory (about
7 µs per event per worker: 94 s for 4 million events with 4 workers on 2 cores,
docs/operations/persistence.md), joins the relay or connects to Redis; done in
the lifespan startup, nothing would answer meanwhile, and an orchestrator's
liveness probe would kill the server before it is ever up.

So under ``sse-fast serve`` (``start_failure_file`` set) the lifespan startup
completes at once and the hub starts in the background (``Lifespan``); the
restore gives the event loop a turn between chunks (``durable/_restore.py``).
While the start is ``pending``:

* ``/livez`` answers 200 and ``/healthz`` 200 (the broker was never lost: it is
  not joined yet); ``/readyz`` answers 503 with what the start is doing
  (``doing``: "restoring history (N of M events)");
* every other endpoint is refused with 503, ``Retry-After`` and that sentence
  (``refusal``): no stream is resumed from half a history (``resumed`` is a
  promise that every event since is there) and no publish is sequenced before
  the sequence is known.

Then the worker serves as usual. A start that fails stays pending (the
endpoints go on refusing, ``/readyz`` says why) and is reported to the main
process, which stops the server (``sse_fast/_startup.py``).

One owner: the worker's ``Lifespan`` moves it (``begin``, ``started``,
``failed``); the endpoints only read it.
"""

from __future__ import annotations

from ..hub import Hub
from ._http import HTTPError

__all__ = ["RETRY_AFTER", "WorkerStart"]

#: seconds a client refused while the worker starts is told to wait (``Retry-After``)
RETRY_AFTER = 2


class WorkerStart:
    """Where a worker's start is (see the module docstring)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: True from ``begin`` until ``started``: only /livez, /healthz, /readyz and
        #: /schema are served
        self.pending = False
        #: why the start failed ("" while it has not)
        self.failure = ""

    def begin(self) -> None:
        """The hub is starting in the background."""
        self.pending = True

    def started(self) -> None:
        """The hub is started: every endpoint serves."""
        self.pending = False

    def failed(self, message: str) -> None:
        """The start failed (``message``: why, and what to do); it stays pending."""
        self.failure = message

    def doing(self) -> str:
        """What the start is doing now, as a phrase for ``/readyz`` and refusals."""
        if self.failure:
            return f"the start failed: {self.failure}"
        progress = self.hub.broker.progress
        if progress is None:
            return "starting"
        if progress.total is None:
            return "restoring history (reading the data directory)"
        if progress.applied < progress.total:
            return f"restoring history ({progress.applied:,} of {progress.total:,} events)"
        return f"history restored ({progress.total:,} events), finishing the start"

    def refusal(self) -> HTTPError:
        """The 503 for a request the starting worker cannot serve yet."""
        return HTTPError(
            503,
            f"this server is starting and serves no streams or publishes yet: {self.doing()}; "
            f"try again in {RETRY_AFTER} s (Retry-After) or at another server",
            [(b"retry-after", str(RETRY_AFTER).encode())],
            reason="starting",
        )
