"""sse-starlette's ``sse_starlette.event``: the items a stream sends, on the native
encoder (the same bytes as sse-starlette's: its separator and field order)."""

from __future__ import annotations

from .._adapters.items import JSONServerSentEvent, ServerSentEvent, ensure_bytes

__all__ = ["JSONServerSentEvent", "ServerSentEvent", "ensure_bytes"]
