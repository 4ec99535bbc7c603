"""CORS: browsers on the origins in ``cors_origins`` may subscribe and publish
with credentials, read ``SSE-Fast-Resume`` and ``Retry-After``, and send
``Authorization`` and ``Last-Event-ID``."""

from __future__ import annotations

from .._asgi import Headers, Scope, Send
from ..protocol import RESUME_HEADER
from ..settings import AccessSettings
from ..settings._checks import split_list
from ._http import HTTPError, header

__all__ = [
    "EXPOSED",
    "Cors",
]

#: the response headers a page may read: what became of its Last-Event-ID, and when to retry
EXPOSED = f"{RESUME_HEADER}, Retry-After".encode()


class Cors:
    """The CORS answers for the origins of ``cors_origins``: the headers of a response, and
    preflights."""

    def __init__(self, settings: AccessSettings) -> None:
        self.origins = frozenset(split_list(settings.cors_origins))
        #: whether any origin is allowed (else no request needs its headers read)
        self.enabled = bool(self.origins)

    def headers(self, scope: Scope) -> Headers:
        """The CORS headers of a response to this request (none for other origins)."""
        if not self.enabled:
            return []
        origin = header(scope, b"origin")
        if origin is None or origin not in self.origins:
            return []
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
            (b"access-control-expose-headers", EXPOSED),
        ]

    async def preflight(self, scope: Scope, send: Send) -> None:
        """Answer an ``OPTIONS`` preflight (403 for an origin not allowed)."""
        origin = header(scope, b"origin")
        if origin is None or origin not in self.origins:
            raise HTTPError(
                403, f"origin {origin!r} is not allowed (cors_origins)", reason="cors_origin"
            )
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *self.headers(scope),
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (
                        b"access-control-allow-headers",
                        b"Authorization, Content-Type, Last-Event-ID",
                    ),
                    (b"access-control-max-age", b"600"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
