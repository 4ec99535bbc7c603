"""Plain HTTP for the endpoints: reading requests, answering them, refusing them.

``HTTPError`` is how every endpoint refuses: a status, one sentence saying what
was wrong and what to do, headers (``Retry-After``, ``Allow``,
``WWW-Authenticate``) and a short ``reason`` for the refusal metric.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from .._asgi import Headers, Scope, Send
from ..publishing import PublishError
from ._auth import AuthError

__all__ = [
    "HTTPError",
    "allow",
    "check_content_encoding",
    "check_content_type",
    "header",
    "header_utf8",
    "query",
    "retry_after",
    "send_json",
    "send_text",
]


class HTTPError(Exception):
    """A refusal: the ``status`` to answer, its ``message`` (one sentence: what was wrong, what to
    do), extra ``headers`` and the refusal metric's ``reason``."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Headers | None = None,
        reason: str = "bad_request",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
        self.reason = reason

    @classmethod
    def from_auth(cls, error: AuthError) -> HTTPError:
        """The refusal of an ``AuthError``: its status and message, with ``WWW-Authenticate`` on a
        401."""
        headers = [(b"www-authenticate", b'Bearer realm="sse_fast"')] if error.status == 401 else []
        return cls(error.status, error.message, headers, reason=error.reason)

    @classmethod
    def from_publish(cls, error: PublishError, reason: str = "bad_publish") -> HTTPError:
        """The refusal of a ``PublishError``: its status and message, ``Retry-After`` when it has
        ``retry_after``, and its own metric reason or else ``reason``."""
        headers = []
        if error.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
        return cls(error.status, str(error), headers, reason=error.reason or reason)


def check_content_type(content_type: str | None, accepted: tuple[str, ...], advice: str) -> None:
    """Refuse (415) a body whose media type is not one of ``accepted`` (a request
    without ``Content-Type`` is taken as the endpoint's own)."""
    if content_type is not None and content_type.split(";")[0].strip().lower() not in (
        *accepted,
        "",
    ):
        raise HTTPError(
            415,
            f"Content-Type {content_type!r} is not supported; {advice}",
            reason="bad_content_type",
        )


def check_content_encoding(encoding: str | None) -> None:
    """Refuse (415) a compressed body: publishes are read as they come, never
    decompressed (a small gzip body can inflate far past ``max_body_bytes``)."""
    if encoding is not None and encoding.strip().lower() not in ("identity", ""):
        raise HTTPError(
            415,
            f"Content-Encoding {encoding!r} is not supported: send the body uncompressed "
            "(no Content-Encoding, or identity)",
            reason="bad_content_encoding",
        )


def retry_after(seconds: float) -> Headers:
    """A ``Retry-After`` header of ``seconds``, rounded, at least 1."""
    return [(b"retry-after", str(max(1, round(seconds))).encode())]


async def send_json(send: Send, status: int, body: Any, headers: Headers | None = None) -> None:
    """Answer ``status`` with ``body`` as JSON (and ``headers``)."""
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_text(
    send: Send, status: int, text: str, content_type: bytes = b"text/plain"
) -> None:
    """Answer ``status`` with ``text`` (UTF-8) as ``content_type``."""
    payload = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _header_bytes(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def header(scope: Scope, name: bytes) -> str | None:
    """A request header as text, byte for byte (Latin-1): for ASCII headers."""
    value = _header_bytes(scope, name)
    return None if value is None else value.decode("latin-1")


def header_utf8(scope: Scope, name: bytes) -> str | None:
    """A request header sent as UTF-8 (``Last-Event-ID``: browsers, curl, requests,
    httpx and aiohttp all send the id's UTF-8 bytes). Bytes that are not UTF-8 come
    back as lone surrogates, which no published id can contain (the encoder
    refuses them): such an id resolves to ``unknown``, never to an error."""
    value = _header_bytes(scope, name)
    return None if value is None else value.decode("utf-8", "surrogateescape")


def query(scope: Scope, encoding: str = "latin-1", **options: Any) -> dict[str, list[str]]:
    """The query string's parameters, each name with its values (``urllib.parse.parse_qs``, which
    ``options`` are passed to)."""
    return parse_qs(scope.get("query_string", b"").decode(encoding), **options)


def allow(method: str, allowed: tuple[str, ...]) -> None:
    """Refuse (405, with ``Allow``) a method an endpoint does not serve."""
    if method not in allowed:
        raise HTTPError(
            405,
            f"method {method} not allowed; use {', '.join(allowed)}",
            [(b"allow", ", ".join(allowed).encode())],
            reason="method",
        )
