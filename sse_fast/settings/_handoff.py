"""The hand-off: what ``sse-fast serve`` decides for its workers, declared once, and
handed to them as one value of its own beside the settings (through ``SSE_FAST_*``
variables of its fields' names)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ._environment import as_variables, read_variables
from ._serving import _doc


@dataclass(frozen=True)
class Handoff:
    """What ``sse-fast serve`` (the supervising process) decides for its workers:
    no options (no flags, not on the options page), a value of its own beside the
    ``Settings``, which the workers read back from ``SSE_FAST_*`` variables
    (``from_env``). The default is what an app outside serve has: no relay, no data
    directory, no signal handlers of its own."""

    relay_socket: str = field(
        default="", metadata=_doc("internal: Unix socket of the multi-worker relay (set by serve)")
    )
    upstream_lock: str = field(
        default="",
        metadata=_doc("internal: the lock that elects the worker reading upstream (set by serve)"),
    )
    install_signal_handlers: bool = field(
        default=False,
        metadata=_doc("internal: drain on SIGTERM inside each worker (set by serve)"),
    )
    store_dir: str = field(
        default="",
        metadata=_doc("internal: the data directory serve locked for this server (set by serve)"),
    )
    start_failure_file: str = field(
        default="",
        metadata=_doc(
            "internal: where a worker reports a failed start, which stops the server; with it a "
            "worker answers /livez from its first second and restores history meanwhile "
            "(set by serve)"
        ),
    )

    main_pid: int = field(
        default=0,
        metadata=_doc(
            "internal: the pid of serve's main process; a worker stops when it is gone "
            "(set by serve)"
        ),
    )

    @classmethod
    def names(cls) -> frozenset[str]:
        """The names of the hand-off's fields."""
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Handoff:
        """The hand-off serve wrote into the environment (``to_env``); the default
        outside serve."""
        return cls(**read_variables(fields(cls), os.environ if environ is None else environ))

    def to_env(self) -> dict[str, str]:
        """The hand-off as ``SSE_FAST_*`` variables (how ``serve`` gives it to workers)."""
        return as_variables(self)
