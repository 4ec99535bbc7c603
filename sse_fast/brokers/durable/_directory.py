"""Where a server keeps its data, and the lock that keeps it to one server.

Taking the directory (``DataDirectory.acquire``) also proves it can be
written, before any worker starts: a read-only mount, a directory this user
may not write, and a file system with no room for a start's first writes
(``START_ROOM``) each stop the start with a sentence naming the cause
(``write_failure`` says what an ``OSError`` while writing there means).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Mapping

from ._records import StoreError

__all__ = [
    "START_ROOM",
    "DataDirectory",
    "default_data_dir",
    "directory_bytes",
    "write_failure",
]

#: bytes a start must be able to write in the data directory (its first segment, the
#: records of a restart, the first publishes): less room than this is a full disk
START_ROOM = 64 * 1024


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
            if exc.errno == errno.EROFS:
                raise StoreError(write_failure(self.path, exc)) from None
            raise StoreError(
                f"cannot create the data directory {self.path}: {exc.strerror or exc}; "
                "choose a writable one with --data-dir (or SSE_FAST_DATA_DIR)"
            ) from None
        if _read_only(self.path):
            raise StoreError(write_failure(self.path, OSError(errno.EROFS, "read-only")))
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
            recorded = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(_in_use(self.path, lock_path, recorded)) from None
        pid = f"{os.getpid()}\n".encode()
        try:  # also the proof that the directory takes a start's first writes
            os.ftruncate(fd, 0)
            os.pwrite(fd, pid, 0)
            os.posix_fallocate(fd, 0, START_ROOM)  # room, given back at once
            os.ftruncate(fd, len(pid))
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
            raise StoreError(write_failure(self.path, exc)) from None
        self._lock = fd

    def release(self) -> None:
        """Unlock the directory (no-op when not locked)."""
        if self._lock >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock, 0)
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = -1


def _in_use(path: str, lock_path: str, recorded: str) -> str:
    """Why the data directory ``path`` cannot be locked, naming the process that holds
    it: the main process whose pid its lock file records, or, when that one is gone,
    the processes that hold the lock still (its workers, forked with the lock's
    descriptor, live on for up to a second after it: ``sse_fast/_orphans.py``)."""
    holders = _holders(lock_path)
    main = int(recorded) if recorded.isdigit() else 0
    if holders and main not in holders and not _running(main):
        pids = ", ".join(str(pid) for pid in holders)
        gone = f"(pid {main}) " if main else ""
        return (
            f"the data directory {path} is held by pid {pids}, left running by an sse-fast "
            f"server whose main process {gone}is gone: they stop within a second (stop them "
            "if they do not), or give this one a directory of its own with --data-dir"
        )
    return (
        f"the data directory {path} is in use by another sse-fast server "
        f"(pid {recorded}); give this one a directory of its own with --data-dir, "
        "or stop the other first"
    )


def _holders(lock_path: str) -> list[int]:
    """The processes other than this one that have ``lock_path`` open, as far as
    ``/proc`` shows (this user's processes; none where there is no ``/proc``)."""
    try:
        lock = os.stat(lock_path)
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    holders = []
    for pid in sorted(pids):
        if pid == os.getpid():
            continue
        directory = f"/proc/{pid}/fd"
        try:
            descriptors = os.listdir(directory)
        except OSError:  # gone, or another user's
            continue
        for descriptor in descriptors:
            try:
                opened = os.stat(os.path.join(directory, descriptor))
            except OSError:
                continue
            if (opened.st_dev, opened.st_ino) == (lock.st_dev, lock.st_ino):
                holders.append(pid)
                break
    return holders


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead and not yet reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def write_failure(path: str, exc: OSError) -> str:
    """What a failed write to the data directory ``path`` means for a start, and
    what to do (a full disk, a read-only mount, a quota are said as such)."""
    if exc.errno == errno.ENOSPC:
        return (
            f"the data directory {path} is on a full file system ({_free(path)}a start "
            f"needs {START_ROOM // 1024} KiB): free space there, or choose another with "
            "--data-dir"
        )
    if exc.errno == errno.EROFS:
        return (
            f"the data directory {path} is on a read-only file system: mount it "
            "read-write, or choose another with --data-dir (or --persistence off to "
            "keep history in memory only)"
        )
    if exc.errno == errno.EDQUOT:
        return (
            f"the data directory {path}: this user's disk quota is used up: free space "
            "or raise the quota, or choose another directory with --data-dir"
        )
    return (
        f"cannot write to the data directory {path}: {exc.strerror or exc}; fix the "
        "directory or its disk, or choose another with --data-dir"
    )


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _free(path: str) -> str:
    try:
        stat = os.statvfs(path)
    except OSError:
        return ""
    return f"{stat.f_bavail * stat.f_frsize} bytes free; "


def directory_bytes(path: str) -> int:
    """Bytes the data directory's files take (for ``/metrics``; any process may ask)."""
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):  # deleted meanwhile
                    total += entry.stat().st_size
    except OSError:
        return 0
    return total
