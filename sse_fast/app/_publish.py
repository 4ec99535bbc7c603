"""``POST /publish``: JSON events in, ids out.

The body is ``{"topic": "a" | "topics": [...], "data": ..., "event": ...,
"id": ..., "retry": ...}`` or ``{"events": [...]}``; the answer is ``{"ids":
[...]}``. The endpoint checks the content type and encoding, the credential
and its rate, reads the body within ``max_body_bytes`` and ``body_timeout``
(``_body.py``), parses it (``publishing.py``, the one place a publish is
validated), checks the credential's topics and publishes through the hub.
Invalid requests get 4xx with ``{"error": ...}`` and nothing is published.
"""

from __future__ import annotations

from .._asgi import Receive, Scope, Send
from .._publish_checks import parse_publish_body
from ..hub import Hub
from ..publishing import PublishError
from ..settings import LimitSettings, StreamSettings
from ._admission import Admission
from ._auth import Authenticator, AuthError
from ._body import BodyDeadlines
from ._cors import Cors
from ._http import HTTPError, check_content_encoding, check_content_type, send_json

__all__ = ["PublishEndpoint"]


class PublishEndpoint:
    """Publish one event or a batch.

    The body is JSON (``Content-Type: application/json``), one event::

        {"topic": "a", "data": {"any": "JSON"}, "event": "update", "id": "n-1", "retry": 3000}

    (``"topics": [...]`` for several topics; ``data`` is required: any JSON value
    but ``null``; strings are sent as text, other values as JSON), or a batch
    ``{"events": [ ... ]}`` of up to ``max_events_per_batch`` (1,000).

    The answer: ``200 {"ids": [...]}``, one id per event and topic. Ids are
    assigned by the server when not given: integers increasing per topic (and
    across restarts). A given ``id`` is remembered for 300 s: a retry of it is
    acknowledged with the same id and not delivered twice.

    Credential: ``Authorization: Bearer <publish_token>`` or a JWT with publish
    rights to the topics (``jwt_*`` options); ``allow_anonymous_publish`` opens it.

    Refusals, and nothing is published: ``400`` a malformed body, a bad topic or
    id, two events of one batch with the same ``id`` (naming both), an event that
    does not match its topic's declared schema; ``401``/``403``
    the credential; ``408`` a body that has not all arrived within
    ``body_timeout``; ``413`` over ``max_body_bytes`` or a batch over
    ``max_events_per_batch``; ``415`` another content type
    or a ``Content-Encoding`` other than identity; ``429`` over ``publish_rate``; ``503``
    while draining, the broker away, a new topic past ``max_topics``, or the data
    directory failing (each with ``Retry-After``).
    """

    def __init__(
        self,
        limits: LimitSettings,
        streams: StreamSettings,
        hub: Hub,
        auth: Authenticator,
        admission: Admission,
        cors: Cors,
        cut_sockets: bool = False,
    ) -> None:
        """``cut_sockets``: a body's wait past its deadline is cut at its socket too
        (under ``sse-fast serve``: ``BodyDeadlines``)."""
        self.limits = limits
        self.hub = hub
        self.auth = auth
        self.admission = admission
        self.cors = cors
        self.deadlines = BodyDeadlines(limits, streams, hub, cut_sockets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One pass over the headers (this path runs thousands of times a second).
        content_type = authorization = declared = encoding = None
        for key, value in scope["headers"]:
            key = key.lower()
            if key == b"content-type":
                content_type = value
            elif key == b"authorization":
                authorization = value
            elif key == b"content-length":
                declared = value
            elif key == b"content-encoding" and encoding is None:
                encoding = value  # the first one not identity is refused, whichever came
                if value.strip().lower() in (b"identity", b""):
                    encoding = None
        if content_type is not None and content_type != b"application/json":
            check_content_type(
                content_type.decode("latin-1"),
                ("application/json",),
                "send JSON with Content-Type: application/json",
            )
        if encoding is not None:
            check_content_encoding(encoding.decode("latin-1"))
        try:
            credential = self.auth.publisher(
                None if authorization is None else authorization.decode("latin-1")
            )
        except AuthError as exc:
            raise HTTPError.from_auth(exc) from None
        self.admission.admit_publish(credential.identity)
        body = await self.deadlines.read(scope, self.read_body(receive, declared))
        try:
            requests = parse_publish_body(body, self.limits)
            self.auth.check_publish(credential, requests)
            ids = await self.hub.publish(requests, checked=True)
        except PublishError as exc:
            raise HTTPError.from_publish(exc) from None
        except AuthError as exc:
            raise HTTPError(exc.status, exc.message, reason=exc.reason) from None
        await send_json(send, 200, {"ids": ids}, self.cors.headers(scope))

    async def read_body(self, receive: Receive, declared: bytes | None) -> bytes:
        """The request's body (``declared``: its ``Content-Length``); ``HTTPError`` 413 past
        ``max_body_bytes``, 400 for a bad ``Content-Length`` or a client that disconnected
        first."""
        limit = self.limits.max_body_bytes
        length = -1  # not declared
        if declared is not None:
            if not declared.isdigit():
                raise HTTPError(400, "Content-Length is not a number", reason="bad_body")
            length = int(declared)
            if length > limit:
                raise HTTPError(
                    413,
                    f"body of {length} bytes exceeds the limit of {limit} bytes (max_body_bytes)",
                    reason="body_too_large",
                )
        message = await receive()
        if message["type"] == "http.request":
            body: bytes = message.get("body", b"")
            if len(body) <= limit and (
                not message.get("more_body", False)
                # Granian sends the body, then an empty last message: with every
                # declared byte here, no need to wait for it (a receive less per publish)
                or len(body) == length
            ):
                return body
        chunks = []
        size = 0
        while True:
            if message["type"] == "http.disconnect":
                raise HTTPError(
                    400, "client disconnected before sending the body", reason="bad_body"
                )
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(
                    413,
                    f"body exceeds the limit of {limit} bytes (max_body_bytes)",
                    reason="body_too_large",
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()
