"""CPU time, process trees and resident memory of processes, and the processes listening
on a port, read from /proc."""

from __future__ import annotations

import contextlib
import os

__all__ = ["cpu_seconds", "listening_pids", "process_tree", "rss_kb"]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kb(pids: list[int]) -> int:
    """The resident memory of these processes together (``VmRSS``, KiB); a process that is gone
    counts 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on TCP ``port`` (IPv4 and IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)  # the header
            for line in f:
                fields = line.split()
                # local address "HEX_IP:HEX_PORT", state 0A = LISTEN, inode
                listening = len(fields) > 9 and fields[3] == "0A"
                if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    inodes.discard("0")
    return inodes


def listening_pids(port: int) -> list[int]:
    """The server listening on TCP ``port``: its processes and all their descendants;
    empty when none can be seen (another user's processes: their ``/proc/<pid>/fd`` is
    not readable).

    The processes holding the listening socket may be workers only (Granian's): their
    process group's leader, when it is one of their ancestors (the server's main
    process, started with a group of its own as an interactive shell's ``&`` does), is
    the root instead; when that group is the caller's own (a script that started both),
    the furthest ancestor with the worker's own command line (a forked worker's main
    process)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    roots: dict[int, None] = {}
    mine = os.getpgid(0)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _holds_one_of(int(entry), wanted):
            roots[_root(int(entry), mine)] = None
    found: dict[int, None] = {}
    for root in roots:
        for pid in process_tree(root):
            found[pid] = None
    return sorted(found)


def _holds_one_of(pid: int, sockets: set[str]) -> bool:
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                    return True
    return False


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _root(pid: int, callers_group: int) -> int:
    """Where the server holding a listening socket in ``pid`` starts: its process group's
    leader when that is ``pid`` or an ancestor of it and the group is not
    ``callers_group``; else its furthest ancestor running the same command line (a
    forked worker's main process); else ``pid``."""
    try:
        group = int(_stat(pid)[2])
        ancestor = pid
        while group != callers_group and ancestor > 1:
            if ancestor == group:
                return group
            ancestor = int(_stat(ancestor)[1])
        command = _cmdline(pid)
        while pid > 1:
            parent = int(_stat(pid)[1])
            if parent <= 1 or _cmdline(parent) != command:
                break
            pid = parent
    except (OSError, ValueError, IndexError):
        pass
    return pid
