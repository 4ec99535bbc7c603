"""The hand-off: what ``sse-fast serve`` decides for its workers, declared once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ._serving import _doc


@dataclass(frozen=True)
class Handoff:
    """What ``sse-fast serve`` (the supervising process) decides for its workers:
    the one place its fields are declared. ``Settings`` has them as settings, read
    back through ``SSE_FAST_*`` variables; they are no flags (the parser and the
    options page leave out ``Handoff.names()``; ``_flags.py``)."""

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
        """The names of the hand-off fields (settings that are no flags)."""
        return frozenset(f.name for f in fields(cls))
