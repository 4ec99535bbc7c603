"""Load generator for SSE servers: many subscribers, timed publishes, latency.

``sse-fast loadgen``, ``python -m sse_fast.loadgen``, or ``run_load(...)``, which
returns a ``Result``. Modules: ``cli`` (the flags and how to run it), ``run``
(run_load, Result), ``subscribers`` (the client processes), ``publishers``,
``stats``, ``procfs``.
"""

from __future__ import annotations

try:
    import httptools  # noqa: F401  (the subscribers and publishers parse HTTP with it)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the load generator parses HTTP with httptools ({exc}); "
        "install it with: pip install 'sse_fast[loadgen]'"
    ) from exc

from .cli import main
from .procfs import cpu_seconds, process_tree, rss_kb
from .publishers import KeepAlivePublisher, PublishRequest, sse_fast_publish, with_token
from .run import LoadOptions, Result, run_load
from .stats import LatencyHistogram, ProcessStats
from .subscribers import (
    Command,
    Subscriber,
    bound_socket,
    subscribe_all,
    subscriber_process,
)
from .subscribers import (
    _subscriber_process as _subscriber_process,
)

__all__ = [
    "Command",
    "KeepAlivePublisher",
    "LatencyHistogram",
    "LoadOptions",
    "ProcessStats",
    "PublishRequest",
    "Result",
    "Subscriber",
    "bound_socket",
    "cpu_seconds",
    "main",
    "process_tree",
    "rss_kb",
    "run_load",
    "sse_fast_publish",
    "subscribe_all",
    "subscriber_process",
    "with_token",
]
