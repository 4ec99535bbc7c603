"""Where a server keeps its data, and the lock that keeps it to one server."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping

from .records import StoreError

__all__ = ["DataDirectory", "default_data_dir"]


def default_data_dir(environ: Mapping[str, str] = os.environ) -> str:
    """systemd's ``$STATE_DIRECTORY`` (its first entry) when set, else
    ``$XDG_STATE_HOME/sse-fast`` (``~/.local/state/sse-fast``)."""
    state = environ.get("STATE_DIRECTORY", "")
    if state:
        return state.split(":")[0]
    base = environ.get("XDG_STATE_HOME", "") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "sse-fast")


class DataDirectory:
    """A data directory, created if missing and locked for this server's life
    (``fcntl.flock`` on ``lock``: released by the kernel when the process dies,
    so a ``kill -9`` never leaves it locked)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._lock: int = -1

    def acquire(self) -> None:
        """Create the directory (mode 0700) if missing and lock it, writing this process's pid in
        ``lock``; ``StoreError`` saying what to do when it cannot be created or written, or another
        server holds it."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the data directory {self.path}: {exc.strerror or exc}; "
                "choose a writable one with --data-dir (or SSE_FAST_DATA_DIR)"
            ) from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise StoreError(
                f"the data directory {self.path} is not writable by this user; fix its "
                "permissions or choose another with --data-dir"
            )
        lock_path = os.path.join(self.path, "lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open {lock_path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"the data directory {self.path} is in use by another sse-fast server "
                f"(pid {holder}); give this one a directory of its own with --data-dir, "
                "or stop the other first"
            ) from None
        try:  # also the first proof that the directory takes writes
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise StoreError(
                f"cannot write to the data directory {self.path}: {exc.strerror or exc}; "
                "free space there or choose another with --data-dir"
            ) from None
        self._lock = fd

    def release(self) -> None:
        """Unlock the directory (no-op when not locked)."""
        if self._lock >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock, 0)
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = -1
