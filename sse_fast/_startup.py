"""Starting ``sse-fast serve``: what is checked before the workers exist, and how
a start that fails later stops the whole server with one line.

Theory of operation
-------------------
A start can fail in two places.

* Before Granian starts, in the main process (``compose.serve``): the listen
  address, the schemas, the data directory (locked, read, proven writable with
  room for a start: ``DataDirectory.acquire``), and Redis, which must not be a
  Redis Cluster and must hold the layout this node is configured with
  (``redis_refusal``: ``brokers/redis/_layout.py``). A failure there is one line
  on stderr and exit status 2.
* In a worker, after it started answering (``app/_start.py``): restoring the
  history, joining the relay, connecting to Redis; or in the main process's
  relay supervisor, when the relay does not start. Such a failure is written as
  one line to the run's ``StartReport`` (a file in a directory of its own,
  handed to the workers as ``start_failure_file``), and the main process gets
  SIGTERM: Granian stops every worker and returns, and ``serve`` says the line
  and exits 2. So Granian never respawns a worker whose start failed, in a loop,
  and no main process is left serving nothing.

The first failure written is the one said (several workers may fail alike). A
run killed with SIGKILL cannot remove its report's directory: the next start on
the machine removes those whose process is gone.

A stop can come at any moment of a start, also while Granian forks a worker:
the fork inherits the main process's SIGTERM handler, which does nothing in a
worker, and Granian's own handler, installed next, loses a SIGTERM taken before
it serves; either way the main process's stop was lost, and the worker started
and served on while the main process waited for it (seen in 1 of 4 stops of a
4-worker start, and in 4 of 4 stops sent as the workers were forked).
``hold_sigterm_until_started`` makes each fork hold SIGTERM (blocked: pending,
never lost) until the lifespan has its handler in place and lets it through
(``app/_lifespan.py``), which drains and stops the worker as at any time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

from .schemas import Schemas, load

__all__ = [
    "StartReport",
    "hold_sigterm_until_started",
    "let_sigterm_through",
    "load_at_start",
    "redis_refusal",
    "remove_stale_reports",
]

#: the name of a run's report directory, then random characters (``tempfile.mkdtemp``)
_PREFIX = "sse-fast-start-"

#: seconds the main process waits for Redis to answer ``INFO cluster``
REDIS_CHECK_TIMEOUT = 3.0


class StartReport:
    """Where the workers (and the relay's supervisor) of one run report a failed
    start: a file the main process reads once Granian has stopped."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls) -> StartReport:
        """A report in a new private directory (``remove`` deletes it), naming this
        process as the one to stop; the directories of killed runs go first."""
        remove_stale_reports()
        directory = tempfile.mkdtemp(prefix=_PREFIX)
        with open(os.path.join(directory, "supervisor"), "w") as f:
            f.write(str(os.getpid()))
        return cls(os.path.join(directory, "failure"))

    def fail(self, message: str) -> None:
        """Write ``message`` (on one line) and stop the server: SIGTERM to the
        process that created the report (Granian's main process; not a parent
        found by ``getppid``, which is no server when workers are threads)."""
        line = " ".join(message.split()) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())  # one write: lines of several workers never mix
        finally:
            os.close(fd)
        with open(os.path.join(os.path.dirname(self.path), "supervisor")) as f:
            supervisor = int(f.read())
        os.kill(supervisor, signal.SIGTERM)

    def failure(self) -> str:
        """The first failure reported ("" if none)."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.readline().strip()
        except FileNotFoundError:
            return ""

    def remove(self) -> None:
        """Delete the report and its directory."""
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


def hold_sigterm_until_started() -> None:
    """Every process forked from this one from now on (Granian's workers) starts with
    SIGTERM blocked, until its lifespan lets it through (``let_sigterm_through``); a
    SIGTERM meanwhile is held, never lost (see the module docstring). The forking
    thread blocks it too while it forks, and gets its mask back after. Once per
    process: ``serve``'s main process (subprocesses it runs are not forked so: their
    mask is their own)."""
    before: list[set[int | signal.Signals]] = []

    def block() -> None:
        before.append(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))

    def restore() -> None:
        if before:
            signal.pthread_sigmask(signal.SIG_SETMASK, before.pop())

    def child() -> None:
        before.clear()  # and SIGTERM stays blocked

    os.register_at_fork(before=block, after_in_parent=restore, after_in_child=child)


def let_sigterm_through() -> None:
    """SIGTERM's handler is in place: let it through, a SIGTERM held meanwhile
    included (``hold_sigterm_until_started``)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def remove_stale_reports(root: str | None = None) -> int:
    """Remove the report directories (under ``root``, the temporary directory by
    default) that runs killed with SIGKILL left: this user's, whose named process no
    longer exists. One being created (no process named yet), another user's, or one
    whose process id was taken again is left. Returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(root or tempfile.gettempdir()))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            with open(os.path.join(entry.path, "supervisor")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
        except OSError:  # alive, and not ours to signal
            continue
    return removed


def redis_refusal(
    urls: Sequence[str],
    partitions: int = 1,
    prefix: str = "sse:",
    node: str = "",
    timeout: float = REDIS_CHECK_TIMEOUT,
) -> str:
    """Why the Redis at ``urls`` (one, or the shards in order) cannot be this server's broker,
    asked of Redis itself: a Redis Cluster node, or a layout recorded there that is not the
    one this node is configured with (``brokers/redis/_layout.py``; recorded now where none
    is). "" when they can, or when a Redis cannot be asked now (down): the workers then say
    what is wrong as they connect."""
    try:
        from .brokers.redis._layout import check_layout
    except ImportError:  # no redis package: the workers say how to install it
        return ""
    try:
        return asyncio.run(check_layout(urls, partitions, prefix, node, timeout)) or ""
    except Exception as exc:  # a bug of the check must not stop a start Redis would allow
        logging.getLogger("sse_fast").warning("the Redis layout check failed: %r", exc)
        return ""


def load_at_start(spec: str) -> Schemas:
    """``load(spec)`` as a server start (``sse-fast serve --schemas``) and
    ``sse-fast codegen --schemas`` do it: modules are looked for in the current
    directory too, as ASGI servers do for the application, and the workers get it
    through ``PYTHONPATH``; what was loaded is logged. SchemaError saying what is
    wrong."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    paths = [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    schemas = load(spec)
    logging.getLogger("sse_fast").info(
        "typed streams from %s: %s",
        spec,
        ", ".join(f"{s.name} ({s.channel})" for s in schemas.streams.values()),
    )
    return schemas
