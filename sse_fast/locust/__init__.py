"""Locust users for any SSE server: subscribers and publishers (``pip install
'sse_fast[locust]'``).

Import them in your own locustfile::

    from sse_fast.locust import PublisherUser, SSEUser  # noqa: F401  (locust finds them)

    class MySubscriber(SSEUser):      # or subclass them: weight, wait_time, host ...
        weight = 10

By default they speak sse_fast's API (``GET /events?topic=T``, ``POST /publish``);
options or class attributes point them at any other server (an sse-starlette app,
Nchan, Mercure ...). Theory of operation, by file:

``_subscriber.py``: ``SSEUser``
    Opens the subscription (a URL template filled with the topic and the user's
    number, headers such as auth), reads the raw body with ``sse_fast.Parser``, and
    reports every event as request type ``SSE``. An event counts when its name is one
    of ``--sse-event`` (all by default); a counted event with a publish time (a JSON
    path, ``--sse-time-field``, in ``--sse-time-unit``) is an ``event`` row whose
    response time is the publish-to-receive latency, one without a time an ``event
    (no time)`` row. The first counted event of each connection is also a ``first
    event`` row: request sent to event received. Where the data has a sequence
    (``--sse-seq-field``) per publisher (``--sse-source-field``), a gap is a ``gap``
    row and one ``lost`` failure per missing event, a repeat a ``duplicate``
    failure. It reconnects like a browser: it waits ``retry`` (from the stream, 3 s
    by default) and sends ``Last-Event-ID``; each reconnection is a ``reconnect`` row
    (how long the stream was down).
``_publisher.py``: ``PublisherUser``
    Publishes ``{"t": time, "s": sequence, "w": publisher, "r": attempt}`` at
    ``--publish-rate`` per second per user: to sse_fast's ``POST /publish``, to any
    HTTP endpoint (``--sse-publish-url`` with a method, a body template such as
    ``{"body": {data}}`` and headers), or through a command per event
    (``--sse-publish-command``). An unconfirmed publish is sent again with the same
    ``s`` and ``r`` + 1: a publish failure, never a lost event.
``_options.py``
    The command-line options (each also an environment variable) and what they
    build: a ``sse_fast.loadtarget`` ``Subscription``, ``Stamps``, ``HttpPublish`` or
    ``CommandPublish``. A class attribute of the same meaning wins over the option.
``_report.py``
    At the end: lost events, duplicates, publish failures, refused subscriptions and
    broken streams are counted apart, each against its threshold
    (``--sse-max-lost 0``, ``--sse-max-duplicates 0``, ``--sse-max-publish-failures
    10%``, ``--sse-max-refusals 5%``, ``--sse-max-stream-errors 5%``); the exit code
    is ``--exit-code-on-error`` when one is exceeded, when fewer than
    ``--sse-min-events`` (1) events counted, or when another row failed; else 0. A
    one-line summary is logged and the CSV files rewritten with the final figures.

Run it against sse_fast (loopback, small load; the server must allow many streams
per IP)::

    SSE_FAST_PUBLISH_TOKEN=t python -m sse_fast serve --port 8765 \\
        --max-connections-per-ip 0 --connect-rate-per-ip 0 &
    SSE_FAST_PUBLISH_TOKEN=t locust -f benches/locustfile.py SSEUser PublisherUser \\
        --headless -u 50 -r 25 -t 20s --host http://127.0.0.1:8765 \\
        --csv /tmp/loc --html /tmp/loc.html

or against another server, e.g. an sse-starlette chat app::

    locust -f benches/locustfile.py SSEUser PublisherUser --headless -u 10 -t 20s \\
        --host http://127.0.0.1:8000 --publish-rate 5 \\
        --sse-url '/rooms/{topic}/stream' --sse-header 'Authorization: Bearer user-{user}' \\
        --sse-event message --sse-time-field body.t --sse-seq-field body.s \\
        --sse-source-field body.w --sse-publish-url '/rooms/{topic}/messages' \\
        --sse-publish-body '{"body": {data}}' \\
        --sse-publish-header 'Content-Type: application/json'

``benches/LOCUST.md`` lists every option and row. Latency uses the publisher's wall
clock, so across machines the clocks must be in sync.
"""

from __future__ import annotations

try:
    import locust  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"sse_fast.locust needs locust ({exc}); install it with: pip install 'sse_fast[locust]'"
    ) from exc

from . import _report  # noqa: F401  (registers the options and the end-of-run listeners)
from ._publisher import PublisherUser
from ._subscriber import (
    DEFAULT_RETRY_MS,
    DuplicateEvent,
    LostEvents,
    MissedEvents,
    ServerDisconnect,
    SSEUser,
    StreamError,
)

__all__ = [
    "DEFAULT_RETRY_MS",
    "DuplicateEvent",
    "LostEvents",
    "MissedEvents",
    "PublisherUser",
    "SSEUser",
    "ServerDisconnect",
    "StreamError",
]
