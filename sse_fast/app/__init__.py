"""The ASGI application, in parts: ``_routing.py`` (``App``), one module per
endpoint (``_events.py``, ``_publish.py``, ``_publish_stream.py``,
``_operations.py``), ``_admission.py`` (client address, connection and rate
limits), ``_auth.py`` (credentials, JWT claims, operations access),
``_body.py`` (request bodies within a deadline), ``_cors.py``, ``_lifespan.py``
(startup, drain, signals), ``_http.py`` (requests, answers, refusals) and
``_upstream.py`` (mirror mode: an upstream stream republished)."""

from __future__ import annotations

from .._logging import configure as configure_logging
from .._orphans import stop_when_orphaned
from ..settings import Settings
from ..settings._handoff import Handoff
from ._http import HTTPError
from ._routing import App


def create_app() -> App:
    """Factory for ASGI servers: settings come from ``SSE_FAST_*`` variables, and so
    does what ``sse-fast serve`` decided for its workers (``Handoff``)."""
    settings = Settings.from_env()
    handoff = Handoff.from_env()  # what serve decided for its workers
    configure_logging(settings.log_level)
    stop_when_orphaned(handoff.main_pid, "worker")  # under serve: never outlive it
    return App(settings, handoff=handoff)


__all__ = ["App", "HTTPError", "create_app"]
