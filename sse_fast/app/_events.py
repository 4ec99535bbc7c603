"""``GET /events?topic=a&topic=b[&lastEventId=...]``: an SSE stream.

The endpoint reads the request (topics, ``Last-Event-ID`` from the header or
the ``lastEventId`` query parameter, a query token), admits it
(``_admission.py``), authorises it (``_auth.py``), and hands the stream to
``Hub.attach``, which owns everything from the response start on. It then
waits for the stream to end, from either side, and gives back the client's
per-IP slot.
"""

from __future__ import annotations

import asyncio
import random

from .._asgi import Receive, Scope, Send
from .._compression import accept_encoding
from .._control_frames import COME_BACK_HEADER_ASGI, disconnect_frame
from .._patterns import is_pattern
from .._publish_checks import (
    check_cursor_length,
    check_event_id,
    check_subscription_pattern,
    check_topic,
)
from ..hub import Hub, Subscription
from ..hub._coding import one_topic
from ..hub._hub import SSE_HEADERS
from ..hub._matching import patterns_refused
from ..protocol import Reason
from ..publishing import PublishError
from ..settings import LimitSettings, StreamSettings
from ._admission import Admission, ClientAddress
from ._auth import Authenticator, AuthError
from ._cors import Cors
from ._http import HTTPError, header, header_utf8, query
from ._start import RETRY_AFTER

__all__ = ["COME_BACK_REFUSALS", "VARY_ACCEPT_ENCODING", "EventsEndpoint"]

#: on every stream's response while compression is offered: caches keep one per coding
VARY_ACCEPT_ENCODING = (b"vary", b"accept-encoding")

#: the refusals of a stream that retrying fixes, by their metric reason, with the reason
#: their come-back gives: answered with a come-back, not with their 429 or 503
COME_BACK_REFUSALS: dict[str, str] = {
    "max_connections": Reason.MAX_CONNECTIONS,
    "max_connections_per_ip": Reason.MAX_CONNECTIONS_PER_IP,
    "connect_rate": Reason.CONNECT_RATE,
    "broker_unavailable": Reason.BROKER_UNAVAILABLE,
    "draining": Reason.DRAINING,
}


class EventsEndpoint:
    """An SSE stream of one or more topics.

    Query parameters: ``topic`` (repeated for several, up to
    ``max_topics_per_connection``, 16; a value with ``*`` or ``?`` is a topic pattern,
    up to ``max_stream_patterns``, 8: every topic it matches, those created later
    included), ``lastEventId`` (instead of the header),
    ``token`` (a subscriber JWT, only with ``allow_query_token``).

    The response: ``200``, ``Content-Type: text/event-stream``,
    ``Cache-Control: no-store``, ``X-Accel-Buffering: no`` (never ``Connection``),
    and ``SSE-Fast-Resume``: ``none``, ``resumed``, ``unknown`` or ``evicted``. The
    first frame is the current position as ``id:`` and ``retry:``; a ``: ``
    comment follows every ``heartbeat_interval`` (15 s) without events.

    Resume: the ``Last-Event-ID`` header (read as UTF-8, as browsers send it) or
    ``lastEventId``. The events after it are sent first, then the stream goes on.
    When the id is unknown or too old, the first event is
    ``event: sse-fast-missed`` with
    ``data: {"reason": "unknown" | "evicted", "last_event_id": ...}`` and the stream
    continues from now: "resumed" is said only with the events.

    Ends announced by the server: ``event: sse-fast-disconnect`` with
    ``data: {"reason": "lagged" | "draining" | "token-expired", ...}``. A stream that
    may have missed events gets ``event: sse-fast-missed`` in their place and stays
    open, its ``reason`` saying why: ``relay-restarted`` or
    ``relay-log-too-short`` (its worker lost the relay of several workers),
    ``redis-restarted``, ``redis-lost-writes`` or ``redis-history-trimmed`` (on
    Redis), ``upstream-missed`` (mirror mode), ``lost-writes`` (a machine crash
    lost the data directory's last writes). Event names starting with
    ``sse-fast-`` are reserved (``sse_fast.protocol``).

    Refusals: ``400`` a malformed query, no topic, too many, a bad topic name,
    pattern or ``Last-Event-ID``; ``401``/``403`` a missing or refused credential for a
    private topic, or for a pattern that can reach one the credential may not have.
    Retrying fixes none of these, and a browser's ``EventSource`` stops on them.

    What retrying does fix is answered so that a browser does retry: its
    ``EventSource`` stops reconnecting for good on any status but 200, a 429 or 503
    included. While the server starts or drains (a restart), over ``max_connections``,
    ``max_connections_per_ip`` or ``connect_rate_per_ip``, and while the broker cannot
    take a subscription, the stream gets ``200`` with the header
    ``SSE-Fast-Come-Back: <reason>`` and one frame, ``event: sse-fast-disconnect`` with
    ``data: {"reason": ..., "message": ...}`` (reasons: ``starting``, ``draining``,
    ``max-connections``, ``max-connections-per-ip``, ``connect-rate``,
    ``broker-unavailable``) and a ``retry``: ``retry_ms`` (2 s while starting; at least
    the wait a limit names) plus up to ``drain_retry_jitter_ms`` at random. The stream
    ends; the client comes back then, with the same ``Last-Event-ID`` (the frame has no
    ``id``), and resumes. Each is counted as refused (``sse_fast_refused_total``, by the
    limit's reason).
    """

    def __init__(
        self,
        limits: LimitSettings,
        streams: StreamSettings,
        hub: Hub,
        auth: Authenticator,
        admission: Admission,
        client_address: ClientAddress,
        cors: Cors,
    ) -> None:
        self.limits = limits
        self.streams = streams
        self.hub = hub
        self.auth = auth
        self.admission = admission
        self.client_address = client_address
        self.cors = cors
        #: the expiry of each stream whose credential expires (most have none)
        self._expiries: dict[Subscription, asyncio.TimerHandle] = {}

    def _ignored_cookie(self, error: AuthError) -> None:
        self.hub.metrics.ignored_cookies_total += 1

    def read_request(self, scope: Scope) -> tuple[list[str], str | None, str | None]:
        """Topics, Last-Event-ID and query token of a subscription (400 on bad input)."""
        limits = self.limits
        try:
            fields = query(
                scope,
                "utf-8",
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=limits.max_topics_per_connection + 8,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPError(
                400, f"query string is malformed or has too many fields ({exc})", reason="bad_query"
            ) from None
        topics = fields.get("topic", [])
        if not topics:
            raise HTTPError(
                400, "name at least one topic: /events?topic=NAME[&topic=OTHER]", reason="bad_topic"
            )
        names = list(dict.fromkeys(topics))
        if len(names) > limits.max_topics_per_connection:
            raise HTTPError(
                400,
                f"{len(names)} topics; at most {limits.max_topics_per_connection} per connection",
                reason="too_many_topics",
            )
        patterns = [name for name in names if is_pattern(name)]
        if len(patterns) > limits.max_stream_patterns:
            raise HTTPError(
                400,
                f"{len(patterns)} topic patterns; at most {limits.max_stream_patterns} per "
                "stream (max_stream_patterns)"
                if limits.max_stream_patterns
                else f"topic {patterns[0][:50]!r} is a pattern (* or ?), and pattern "
                "subscriptions are off on this server (max_stream_patterns is 0): name topics",
                reason="bad_pattern",
            )
        for name in names:
            try:
                if is_pattern(name):
                    check_subscription_pattern(name, limits)
                else:
                    check_topic(name, limits)
            except PublishError as exc:
                reason = "bad_pattern" if is_pattern(name) else "bad_topic"
                raise HTTPError(400, str(exc), reason=reason) from None
        last_event_id = header_utf8(scope, b"last-event-id")
        if last_event_id is None:
            last_event_id = fields.get("lastEventId", [None])[-1]
        if last_event_id is not None:
            try:
                if last_event_id.startswith("~"):  # a cursor this server gave out
                    check_cursor_length(last_event_id, limits, self.hub.broker.partitions)
                else:
                    check_event_id(last_event_id, limits, "Last-Event-ID")
            except PublishError as exc:
                raise HTTPError(400, str(exc), reason="bad_last_event_id") from None
        return names, last_event_id, fields.get("token", [None])[-1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = await self.open(scope, receive, send)
        try:
            # the end: the client's http.disconnect, or the server closing the stream
            await subscription.closed
        finally:
            self.finish(scope, subscription)

    async def come_back_later(
        self,
        scope: Scope,
        send: Send,
        reason: str,
        message: str,
        counted_as: str | None = None,
        at_least_ms: int = 0,
    ) -> None:
        """Tell the client to reconnect after a jittered ``retry`` (``reason``, a
        ``Reason``: the server is ``starting`` or ``draining``, or a refusal for now) in a
        200 stream of one ``sse-fast-disconnect`` frame, which a browser follows where it
        would give up on a 429 or 503 (see the class docstring); counted as refused for
        ``counted_as`` (default ``reason``)."""
        streams = self.streams
        base = RETRY_AFTER * 1000 if reason == Reason.STARTING else streams.retry_ms
        delay = max(base, at_least_ms) + random.randint(0, streams.drain_retry_jitter_ms)
        self.hub.metrics.refuse(counted_as or reason)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *SSE_HEADERS,
                    (COME_BACK_HEADER_ASGI, reason.encode()),
                    *self.cors.headers(scope),
                ],
            }
        )
        frame = disconnect_frame(reason, retry=delay, message=message)
        await send({"type": "http.response.body", "body": frame, "more_body": False})

    async def come_back_instead(self, scope: Scope, send: Send, error: HTTPError) -> bool:
        """Answer ``error`` with a come-back when retrying fixes it (``COME_BACK_REFUSALS``,
        a 429 or 503): the client is told to retry after at least its ``Retry-After``.
        False when it is not such a refusal (the caller answers its status)."""
        reason = COME_BACK_REFUSALS.get(error.reason)
        if reason is None or error.status not in (429, 503):
            return False
        wait = 0
        for name, value in error.headers:
            if name == b"retry-after" and value.isdigit():
                wait = int(value) * 1000
        await self.come_back_later(
            scope, send, reason, error.message, counted_as=error.reason, at_least_ms=wait
        )
        return True

    async def open(self, scope: Scope, receive: Receive, send: Send) -> Subscription:
        """Admit, authorise and attach the stream (``HTTPError`` when refused); the
        caller awaits ``subscription.closed``, then calls ``finish``. Split so that an
        idle stream holds no frame of this endpoint's (``App.__call__`` waits itself:
        its frame is one a request has anyway)."""
        hub = self.hub
        if hub.draining:
            raise HTTPError(
                503,
                "server is draining; reconnect to another instance",
                [(b"retry-after", b"1")],
                reason="draining",
            )
        names, last_event_id, query_token = self.read_request(scope)
        refusal = patterns_refused(hub.broker.patterns_refusal, names)
        if refusal is not None:
            raise HTTPError(400, refusal, reason="pattern_unsupported")
        ip = self.client_address(scope)
        self.admission.admit_stream(ip, len(hub.subscriptions))
        try:
            credential = self.auth.subscriber(
                header(scope, b"authorization"),
                header(scope, b"cookie"),
                query_token,
                names,
                self._ignored_cookie,
            )
        except AuthError as exc:
            self.admission.refused_stream(ip)
            raise HTTPError.from_auth(exc) from None
        self.admission.hold_stream(ip)
        compression = hub.compression
        headers = self.cors.headers(scope)
        coding = None
        if compression.offered:
            headers = [*headers, VARY_ACCEPT_ENCODING]
            coding = compression.choose(
                accept_encoding(scope.get("headers", ())),  # every line of it
                names,
                not one_topic(names) and self._mixes_private(names),
            )
        try:
            subscription = await hub.attach(
                names,
                last_event_id,
                send,
                receive,
                headers=headers,
                subject=None if credential is None else credential.subject,
                scope=scope,
                coding=coding,
            )
        except PublishError as exc:  # the broker cannot subscribe now (before any byte)
            self.admission.release_stream(ip)
            raise HTTPError.from_publish(exc, reason="broker_unavailable") from None
        except BaseException:
            self.admission.release_stream(ip)
            raise
        if credential is not None and credential.expires_at is not None:
            self._expiries[subscription] = asyncio.get_running_loop().call_later(
                max(0.0, credential.expires_at - self.auth.clock()), hub.expire, subscription
            )
        return subscription

    def _mixes_private(self, names: list[str]) -> bool:
        """Whether a stream of several ``names`` holds a private topic, or may (a
        pattern, with private topics configured): its compression context would mix
        it with the others (``Compression.choose``)."""
        auth = self.auth
        return any(
            bool(auth.private_topics) if is_pattern(name) else auth.is_private(name)
            for name in names
        )

    def finish(self, scope: Scope, subscription: Subscription) -> None:
        """The stream is over (or its handler is leaving): free it, stop its token's
        expiry, give back the client's per-IP slot (its address read again from
        ``scope``, as ``open`` read it)."""
        try:
            self.hub.detach(subscription)
        finally:
            expiry = self._expiries.pop(subscription, None)
            if expiry is not None:
                expiry.cancel()
            self.admission.release_stream(self.client_address(scope))
