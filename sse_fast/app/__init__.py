"""The ASGI application, in parts: ``routing.py`` (``App``), one module per
endpoint (``events.py``, ``publish.py``, ``publish_stream.py``,
``operations.py``), ``admission.py`` (client address, connection and rate
limits), ``auth.py`` (credentials, JWT claims, operations access),
``body.py`` (request bodies within a deadline), ``cors.py``, ``lifespan.py``
(startup, drain, signals), ``http.py`` (requests, answers, refusals) and
``upstream.py`` (mirror mode: an upstream stream republished)."""

from __future__ import annotations

import logging

from ..settings import Settings
from .http import HTTPError
from .routing import App


def create_app() -> App:
    """Factory for ASGI servers: settings come from ``SSE_FAST_*`` variables."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    return App(settings)


__all__ = ["App", "HTTPError", "create_app"]
