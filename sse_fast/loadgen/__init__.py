"""Load generator for SSE servers: many subscribers, timed publishes, latency.

``sse-fast loadgen``, ``python -m sse_fast.loadgen``, or ``run_load(...)``, which
returns a ``Result``. Any SSE server: its API is described with
``sse_fast.loadtarget`` (``--url``, ``--publish-url``, ... on the command line).
Public: ``run_load``, its ``LoadOptions`` and its ``Result``, and ``main`` (the
command). The private modules: ``_cli`` (the flags and how to run it), ``_run``
(run_load, Result), ``_subscribers`` (the connections), ``_clients`` (the client
processes), ``_event_reading`` (where an event's stamps are), ``_publishers``, ``_phases``
(publishing at a rate, probing), ``_stats``, ``_procfs``. A run needs httptools
(the ``loadgen`` extra); importing this package and ``--help`` do not.
"""

from __future__ import annotations

from ._cli import main
from ._load_options import LoadOptions
from ._run import Result, run_load

__all__ = ["LoadOptions", "Result", "main", "run_load"]
