"""What users publish with, and what a refused publish raises.

An embedder builds ``PublishRequest`` objects (``topics``, ``data``, and an
optional ``event``, ``id`` and ``retry``) and hands them to ``Hub.publish``; a
publish the server refuses raises ``PublishError``, with the HTTP status to
answer with and a sentence saying what was wrong. Every way into the hub is
checked by the same rules, in ``_publish_checks.py`` (its docstring says how).
"""

from __future__ import annotations

from ._core.request import PublishRequest

__all__ = ["PublishError", "PublishRequest"]


class PublishError(ValueError):
    """A publish was refused: ``status`` is the HTTP status to answer with (400 for
    an invalid request); ``retry_after`` (seconds) when trying again later helps."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        #: the refusal metric's reason, when more precise than the endpoint's
        self.reason = reason
