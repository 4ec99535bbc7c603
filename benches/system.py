"""The machine as the benchmarks read and describe it: every read of ``/proc`` in
``benches/``, and the description of the machine each report records.

Harness, no command of its own. :func:`machine` is what the load suites record
(``server_bench``, ``compare``, ``notifications``, ``scaling``, ``persistence``, ...);
:func:`machine_and_build`, a longer description in keys of its own (memory, limits,
the versions and the changes under test), is what the fan-out experiments and
``send_buffer`` record; both keep the format of the reports written with them. The processes' CPU time, trees and resident memory
come from the package's :mod:`sse_fast.loadgen._procfs` (re-exported here); this module
adds what only the benchmarks read: the CPU model, the machine's CPU counters and
load average, kernel settings (``/proc/sys``), the kernel's TCP memory, and a
process's threads, raw ``stat`` and command line. Each reader returns the text or
numbers as the kernel gives them; the report of each suite formats them its own way.
``tests/test_layout.py`` checks that no other module of ``benches/`` names ``/proc``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from sse_fast.loadgen._procfs import cpu_seconds, listening_pids, process_tree, rss_kb

__all__ = [
    "cmdline",
    "cpu_model",
    "cpu_seconds",
    "cpu_times",
    "listening_pids",
    "loadavg",
    "machine",
    "machine_and_build",
    "mapped_files",
    "pids",
    "process_stat",
    "process_tree",
    "rss_kb",
    "sockstat",
    "sysctl",
    "thread_schedstat",
    "thread_stat",
    "threads",
]

PROC = Path("/proc")


def cpu_model() -> str | None:
    """The ``model name`` of ``/proc/cpuinfo``'s first CPU; None when it names none.
    Raises OSError when ``/proc/cpuinfo`` cannot be read."""
    for line in (PROC / "cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def cpu_times() -> list[int]:
    """The machine's CPU time so far by kind (``/proc/stat``'s ``cpu`` line: user, nice,
    system, idle, iowait, ...), in clock ticks."""
    first = (PROC / "stat").read_text().split("\n", 1)[0]
    return [int(value) for value in first.split()[1:]]


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages as ``/proc/loadavg`` writes them."""
    return (PROC / "loadavg").read_text().split()[:3]


def sysctl(name: str) -> str:
    """A kernel setting by its dotted name (``net.core.somaxconn``), stripped."""
    return (PROC / "sys" / name.replace(".", "/")).read_text().strip()


def sockstat() -> str:
    """``/proc/net/sockstat`` (the kernel's socket counts and TCP memory, in pages)."""
    return (PROC / "net" / "sockstat").read_text()


def pids() -> list[int]:
    """The processes that exist now."""
    return [int(entry) for entry in os.listdir(PROC) if entry.isdigit()]


def process_stat(pid: int) -> str:
    """``/proc/PID/stat`` as text; OSError when the process is gone."""
    return (PROC / str(pid) / "stat").read_text()


def cmdline(pid: int) -> bytes:
    """``/proc/PID/cmdline`` (arguments separated by NUL); OSError when gone."""
    return (PROC / str(pid) / "cmdline").read_bytes()


def mapped_files(pid: int) -> set[str]:
    """The files process ``pid`` has mapped (``/proc/PID/maps``: its executable, the
    shared libraries and extension modules it loaded); OSError when it is gone."""
    out = set()
    for line in (PROC / str(pid) / "maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            out.add(fields[5])
    return out


def threads(pid: int) -> list[int]:
    """The thread ids of process ``pid``; OSError when it is gone."""
    return [int(name) for name in os.listdir(PROC / str(pid) / "task")]


def thread_stat(pid: int, tid: int) -> str:
    """``/proc/PID/task/TID/stat`` as text; OSError when the thread is gone."""
    return (PROC / str(pid) / "task" / str(tid) / "stat").read_text()


def thread_schedstat(pid: int, tid: int) -> str:
    """``/proc/PID/task/TID/schedstat`` (ns on a CPU, ns waiting, slices); OSError when
    the thread is gone."""
    return (PROC / str(pid) / "task" / str(tid) / "schedstat").read_text()


# ------------------------------------------------------------------ descriptions


def machine() -> dict[str, Any]:
    """The machine, its load and the checkout's commit, as the load suites record them."""
    cpu = cpu_model() or "unknown"
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
        "ulimit_n": subprocess.run(
            ["sh", "-c", "ulimit -n"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }


def _cpu_model() -> str:
    return cpu_model() or platform.processor() or "unknown"


def _git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return ""


def machine_and_build() -> dict[str, Any]:
    """The machine (memory, file and listen limits too), the versions under test and the
    checkout's commit and changes, as the fan-out experiments and send_buffer record them."""
    import sse_fast
    from benches import peers  # here: peers reads /proc through this module

    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "ulimit_nofile_hard": peers.hard_nofile(),
        "somaxconn": sysctl("net.core.somaxconn"),
        "python": platform.python_version(),
        "granian": peers.dist_version("granian"),
        "uvloop": peers.dist_version("uvloop"),
        "orjson": peers.dist_version("orjson"),
        "sse_fast": sse_fast.__version__,
        "sse_fast_extensions": sse_fast.HAS_EXTENSIONS,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": _git(
            "status",
            "--porcelain",
            "--",
            "sse_fast",
            "benches/fanout_apps.py",
            "benches/fanout_paths.py",
            "sse_fast/loadgen/",
        ).splitlines(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
