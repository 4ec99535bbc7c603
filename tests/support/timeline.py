"""When each test ran, on which worker: ``python -m pytest -p tests.support.timeline``
writes one line per test phase to ``$SSE_FAST_TIMELINE`` (default
``/tmp/sse-fast-timeline.jsonl``), and ``python -m tests.support.timeline FILE`` says
where a run's wall time went: each worker's busy and idle seconds, the xdist groups by
the seconds they held a worker, and the stretch at the end with workers idle. For
finding what bounds the suite's wall time (tests/test_scheduling.py keeps the groups
honest; this shows their lengths)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

__all__ = [
    "pytest_runtest_protocol",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "summary",
]

PATH = os.environ.get("SSE_FAST_TIMELINE", "/tmp/sse-fast-timeline.jsonl")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Record the test's start and end (setup to teardown), its worker, its group and
    the CPU seconds it cost: the worker's and those of its children reaped meanwhile
    (servers it started and stopped; a module's fixtures count for its first test)."""
    started, cpu = time.time(), _own_cpu()
    try:
        return (yield)
    finally:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        group = next((m.args[0] for m in item.iter_markers("xdist_group") if m.args), "")
        line = {"id": item.nodeid, "worker": worker, "group": group}
        line |= {"start": started, "end": time.time(), "cpu_s": _own_cpu() - cpu}
        with open(PATH, "a") as f:
            f.write(json.dumps(line) + "\n")


def _own_cpu() -> float:
    """CPU seconds of this process and of its children that were waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _cpu() -> list[int]:
    """(busy, total) jiffies of every core together, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return [sum(fields) - idle, sum(fields)]


def pytest_sessionstart(session: pytest.Session) -> None:
    """The controller (or the only process) notes the CPU counters at the start."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        with open(PATH, "a") as f:
            f.write(json.dumps({"cpu": _cpu()}) + "\n")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """And at the end."""
    pytest_sessionstart(session)


def summary(path: str) -> str:
    """Where the wall time of the run recorded in ``path`` went."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in lines if "id" in r]
    cpu = [r["cpu"] for r in lines if "cpu" in r]
    first, last = min(r["start"] for r in rows), max(r["end"] for r in rows)
    out = [f"{len(rows)} tests, {last - first:.1f} s from the first start to the last end"]
    if len(cpu) >= 2:  # the machine's CPU over the session: busy share of all cores
        busy, total = cpu[-1][0] - cpu[0][0], cpu[-1][1] - cpu[0][1]
        out.append(f"the machine's cores were busy {100 * busy / total:.0f} % of the session")
    by_worker: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in rows:
        by_worker[r["worker"]].append(r)
    for worker, mine in sorted(by_worker.items()):
        busy = sum(r["end"] - r["start"] for r in mine)
        done = max(r["end"] for r in mine) - first
        out.append(f"  {worker}: busy {busy:.1f} s, done at {done:.1f} s")
    groups: dict[str, float] = defaultdict(float)
    for r in rows:
        groups[r["group"] or "(none)"] += r["end"] - r["start"]
    out.append("groups by seconds held (the longest first):")
    for group, seconds in sorted(groups.items(), key=lambda g: -g[1])[:15]:
        out.append(f"  {seconds:7.1f} s  {group}")
    costly: dict[str, float] = defaultdict(float)
    for r in rows:
        costly[r["id"].split("::")[0]] += r.get("cpu_s", 0.0)
    out.append(f"CPU seconds of the tests and their children: {sum(costly.values()):.0f}")
    out.append("modules by CPU seconds (the costliest first):")
    for module, seconds in sorted(costly.items(), key=lambda m: -m[1])[:25]:
        out.append(f"  {seconds:7.1f} s  {module}")
    tail = sorted(rows, key=lambda r: -r["end"])[:10]
    out.append("the last tests to end:")
    for r in tail:
        out.append(f"  {r['end'] - first:7.1f} s  {r['worker']}  {r['id'][:120]}")
    return "\n".join(out)


if __name__ == "__main__":
    print(summary(sys.argv[1] if len(sys.argv) > 1 else PATH))
