"""Load generator for SSE servers: many subscribers, timed publishes, latency.

``sse-fast loadgen``, ``python -m sse_fast.loadgen``, or ``run_load(...)``, which
returns a ``Result``. Any SSE server: its API is described with
``sse_fast.loadtarget`` (``--url``, ``--publish-url``, ... on the command line).
Modules: ``cli`` (the flags and how to run it), ``run`` (run_load, Result),
``subscribers`` (the connections), ``clients`` (the client processes), ``reading``
(where an event's stamps are), ``publishers``, ``phases`` (publishing at a rate,
probing), ``stats``, ``procfs``. A run needs httptools (the ``loadgen``
extra); importing this package and ``--help`` do not.
"""

from __future__ import annotations

from ._cli import main
from ._clients import Command, subscriber_process
from ._clients import _subscriber_process as _subscriber_process
from ._procfs import cpu_seconds, listening_pids, process_tree, rss_kb
from ._publishers import (
    CommandPublisher,
    KeepAlivePublisher,
    PublishRequest,
    sse_fast_publish,
    with_token,
)
from ._run import LoadOptions, Result, run_load
from ._stats import LatencyHistogram, ProcessStats
from ._subscribers import Subscriber, bound_socket, subscribe_all

__all__ = [
    "Command",
    "CommandPublisher",
    "KeepAlivePublisher",
    "LatencyHistogram",
    "LoadOptions",
    "ProcessStats",
    "PublishRequest",
    "Result",
    "Subscriber",
    "bound_socket",
    "cpu_seconds",
    "listening_pids",
    "main",
    "process_tree",
    "rss_kb",
    "run_load",
    "sse_fast_publish",
    "subscribe_all",
    "subscriber_process",
    "with_token",
]
