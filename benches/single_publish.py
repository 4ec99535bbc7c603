"""One event per request: ``POST /publish`` against the floor, a bare Granian app.

    python -m benches.single_publish              # 3 rounds of 8 s per target
    python -m benches.single_publish --rounds 1 --seconds 3
    python -m benches.single_publish --compare-with DIR   # + another commit's sse_fast

Issue 30's target for the single-publish path is at least 0.95x the requests/s
of a bare Granian ASGI app that reads the body and answers 200, in the same
run. Four servers, each alone on core 1 (every thread pinned), no
subscribers, ``wrk`` on core 0 with the notification benchmark's request (a
small JSON event to a random one of 10,000 ``user/<n>`` topics, 16
connections, one thread):

* ``bare``: ``benches/peers/bare_post_app.py``, reading the body until
  ``more_body`` is false (what a plain ASGI app does);
* ``bare-cl``: the same app stopping at the declared Content-Length (as
  sse_fast does; Granian then has no empty last message to send);
* ``sse_fast``: ``sse-fast serve`` (one worker, anonymous publishing, no rate
  limit; every check of a publish made: content type, credential, body size,
  JSON, fields, topic names, room for new topics, sequencing, encoding,
  storing in the topic's ring);
* ``sse_fast+schemas``: the same with three typed streams declared
  (``benches/typed_example.py``) that the topics are not of;
* ``sse_fast-always``: ``sse-fast serve --persistence always`` (an ``fdatasync``
  per write of the data directory);
* ``sse_fast-decay10``: ``sse-fast serve --allocator-decay 10`` (Granian's
  allocator keeping freed pages 10 s, jemalloc's own, where the default gives
  them back at once: less memory per stream, a system call per request);
* with ``--compare-with DIR``, ``sse_fast@<commit>`` and
  ``sse_fast-always@<commit>``: the same from another checkout (a git worktree
  with its extensions built in place), each right after its own in every round:
  a change's A/B in the same run.

Rounds are interleaved (bare, bare-cl, sse_fast, bare, ...) and each target's
median is reported with the ratio to both floors: this machine is noisy, and
a ratio within one run is what counts. Results go to
``benches/results/single_publish.{md,json}``. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import peers
from .notifications import SERVER_CORE, options_of, pin, run_wrk
from .system import machine

RESULTS = Path(__file__).resolve().parent / "results"
USERS = 10_000


@dataclass(eq=False)
class GranianTarget(peers.Target):
    """An app of ``benches/peers/`` under Granian: its processes are the main one and
    its workers."""

    def server_pids(self) -> list[int]:
        if self._proc is None or not peers.pid_alive(self._proc.pid):
            return []
        return [self._proc.pid, *peers.descendants(self._proc.pid)]

    def versions(self) -> dict[str, str]:
        out = super().versions()
        out["granian"] = peers.dist_version("granian")
        return out


@dataclass(eq=False)
class BareTarget(GranianTarget):
    stop_at_length: bool = False

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv = [self.python or sys.executable, "bare_post_app.py", self.host, str(self.port)]
        env = {"BARE_STOP_AT_LENGTH": "1" if self.stop_at_length else "0"}
        return argv, peers.PEERS_DIR, peers.clean_env(env)


@dataclass(eq=False)
class AlwaysTarget(peers.SseFastTarget):
    """``sse-fast serve --persistence always``: every write of the data directory synced."""

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv, cwd, env = super().command(workdir)
        return [*argv, "--persistence", "always"], cwd, env


@dataclass(eq=False)
class DecayTarget(peers.SseFastTarget):
    """``sse-fast serve --allocator-decay 10``: Granian's allocator keeps freed pages 10 s
    (jemalloc's own) instead of giving them back at once (the default, which costs a
    system call and page faults per request for less memory per stream)."""

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv, cwd, env = super().command(workdir)
        return [*argv, "--allocator-decay", "10"], cwd, env


@dataclass(eq=False)
class SchemasTarget(peers.SseFastTarget):
    """``sse-fast serve`` with typed streams declared that the benchmark's topics are
    not of: what declaring streams costs the publishes to other topics."""

    def command(self, workdir: Path) -> tuple[list[str], Path, dict[str, str]]:
        argv, cwd, env = super().command(workdir)
        return [*argv, "--schemas", "benches.typed_example:streams"], cwd, env


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_rounds(targets: list[peers.Target], rounds: int, seconds: float) -> dict[str, Any]:
    """Every target alone on the server core, ``rounds`` times interleaved, wrk at full
    speed for ``seconds``: requests/s, latency and the server threads' CPU per round."""
    results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    versions: dict[str, str] = {}
    for index in range(rounds):
        for target in targets:
            target.start()
            try:
                if "@" not in target.name:  # the other checkout's (--compare-with) is its name
                    with contextlib.suppress(Exception):
                        versions.update(target.versions())
                elif "@py" in target.name and target.python:  # --compare-python
                    try:
                        other = peers.python_versions(target.python)
                    except (OSError, ValueError, subprocess.SubprocessError) as exc:
                        log(f"{target.name}: its versions could not be read: {exc!r}")
                    else:
                        versions.update({f"{k} ({target.name})": v for k, v in other.items()})
                pids = target.server_pids()
                pin(pids, SERVER_CORE)
                time.sleep(0.5)
                before = peers.thread_cpu(pids)
                # wrk's step number seeds the topic order; the same for every target
                out = run_wrk(target, seconds, USERS, index + 1)
                after = peers.thread_cpu(pids)
            finally:
                target.stop()
            rate = out["acked"] / seconds
            results[target.name].append(
                {
                    "requests_per_s": rate,
                    "errors": out["errors"],
                    "p50_ms": out["p50"] * 1e3,
                    "p99_ms": out["p99"] * 1e3,
                    "wrk_cpu_s": out["cpu"],
                    # CPU seconds per role over the round (the server's processes)
                    "cpu_s": {role: after[role] - before[role] for role in after},
                }
            )
            log(f"round {index + 1} {target.name:10s} {rate:>9,.0f} req/s errors {out['errors']}")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "params": {"rounds": rounds, "seconds": seconds, "users": USERS, "connections": 16},
        "versions": versions,
        "results": results,
    }


def run(
    rounds: int, seconds: float, compare_with: str | None = None, compare_python: str = ""
) -> dict[str, Any]:
    host = peers.HOST
    ports = peers.free_ports(host, 6)
    targets: list[peers.Target] = [
        BareTarget("bare", host, ports[0]),
        BareTarget("bare-cl", host, ports[1], stop_at_length=True),
        peers.SseFastTarget("sse_fast", host, ports[2], heartbeat=30.0),
        SchemasTarget("sse_fast+schemas", host, ports[3], heartbeat=30.0),
        AlwaysTarget("sse_fast-always", host, ports[4], heartbeat=30.0),
        DecayTarget("sse_fast-decay10", host, ports[5], heartbeat=30.0),
    ]
    targets = with_python(with_checkout(targets, compare_with), compare_python)
    return run_rounds(targets, rounds, seconds)


#: the targets run by another Python too (``--compare-python``)
PYTHON_COMPARED = ("bare", "sse_fast")


def with_python(targets: list[peers.Target], python: str) -> list[peers.Target]:
    """``targets`` with each of ``PYTHON_COMPARED`` run by ``python`` right after its
    own (``--compare-python``)."""
    if not python:
        return targets
    return _each_after(targets, PYTHON_COMPARED, lambda t: peers.python_target(t, python))


#: the targets run from the other checkout too (``--compare-with``)
COMPARED = ("sse_fast", "sse_fast-always")


def with_checkout(targets: list[peers.Target], compare_with: str | None) -> list[peers.Target]:
    """``targets`` with each of ``COMPARED`` from the checkout ``compare_with`` right
    after its own (``--compare-with``)."""
    if not compare_with:
        return targets

    def other(target: peers.Target) -> peers.Target:
        assert isinstance(target, peers.SseFastTarget)
        return peers.checkout_target(target, compare_with)

    return _each_after(targets, COMPARED, other)


def _each_after(
    targets: list[peers.Target],
    names: tuple[str, ...],
    make: Callable[[peers.Target], peers.Target],
) -> list[peers.Target]:
    """``targets``, each one named in ``names`` followed by ``make(it)``."""
    out: list[peers.Target] = []
    for target in targets:
        out.append(target)
        if target.name in names:
            out.append(make(target))
    return out


def checkout_lines(report: dict[str, Any]) -> list[str]:
    """The A/B sentences of a run with ``--compare-with`` (none without)."""
    out = []
    for name in report["results"]:
        base = name.partition("@")[0]
        if "@" in name and base in report["results"]:
            ratio = median(report, base) / median(report, name)
            out.append(f"{base} / {name}: {ratio:.3f}x (medians, same run).")
    return out


def median(report: dict[str, Any], name: str) -> float:
    return float(statistics.median(r["requests_per_s"] for r in report["results"][name]))


def write_report(report: dict[str, Any], path: Path) -> None:
    m, p = report["machine"], report["params"]
    bare, bare_cl = median(report, "bare"), median(report, "bare-cl")
    lines = [
        "# One event per request: POST /publish against a bare Granian app",
        "",
        f"`python -m benches.single_publish{options_of(report)}` on {m.get('cores', '?')} cores "
        f"({m.get('cpu', '?')}), Python {m.get('python', '?')}, {report['date']}.",
        "",
        f"- Each server alone on core 1 (every thread pinned), no subscribers; `wrk` on core 0, "
        f"{p['connections']} connections, one thread, {p['seconds']:g} s per round, "
        f"{p['rounds']} rounds interleaved; a small JSON event to a random one of "
        f"{p['users']:,} topics per request (the notification benchmark's request).",
        "- bare: a Granian ASGI app that reads the body to its end and answers 200; bare-cl: "
        "the same, stopping at Content-Length (as sse_fast does); sse_fast: `sse-fast serve`, "
        "one worker, every check of a publish made; sse_fast+schemas: the same with three "
        "typed streams declared (`benches/typed_example.py`), none of which the topics are "
        "of: what declaring streams costs other publishes; sse_fast-always: with "
        "`--persistence always` (an fdatasync per write of the data directory); "
        "sse_fast-decay10: with `--allocator-decay 10` (Granian's allocator keeps freed pages "
        "10 s instead of giving them back at once); `@<commit>`: "
        "the same from another commit's checkout (`--compare-with`), run right after; "
        "`@py<version>`: the same run by another Python (`--compare-python`).",
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in sorted(report["versions"].items())),
        "",
        "| target | requests/s per round | median | vs bare | vs bare-cl | p99 ms (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    plain = median(report, "sse_fast")
    for name, rows in report["results"].items():
        rates = ", ".join(f"{r['requests_per_s']:,.0f}" for r in rows)
        mid = median(report, name)
        p99 = statistics.median(r["p99_ms"] for r in rows)
        lines.append(
            f"| {name} | {rates} | {mid:,.0f} | {mid / bare:.2f}x | {mid / bare_cl:.2f}x "
            f"| {p99:.1f} |"
        )
    if "sse_fast+schemas" in report["results"]:
        typed = median(report, "sse_fast+schemas")
        lines += ["", f"sse_fast+schemas / sse_fast: {typed / plain:.3f}x (medians, same run)."]
    if "sse_fast-decay10" in report["results"]:
        kept = median(report, "sse_fast-decay10")
        lines += [
            "",
            f"sse_fast / sse_fast-decay10: {plain / kept:.3f}x (medians, same run): what giving "
            "freed memory back at once costs a single publish.",
        ]
    lines += checkout_lines(report)
    path.write_text("\n".join(lines) + "\n")


def main_of(
    name: str,
    doc: str,
    seconds: float,
    run_them: Callable[[int, float, str | None, str], dict[str, Any]],
    write: Callable[[dict[str, Any], Path], None],
    argv: list[str] | None,
) -> int:
    """The command line of ``benches.<name>``: run, write ``results/<name>.{json,md}``
    (or ``--out``), print the table."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benches.{name}", description=doc.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--out", default=str(RESULTS / name), help="path prefix")
    parser.add_argument(
        "--compare-with",
        metavar="DIR",
        help="also run sse-fast serve from this checkout of another commit, built in place "
        "(git worktree add DIR REF && cd DIR && python setup.py build_ext --inplace), as "
        "target sse_fast@REF, right after sse_fast in every round",
    )
    parser.add_argument(
        "--compare-python",
        metavar="PYTHON",
        default="",
        help="also run the Python servers by this interpreter (its packages installed: "
        "granian, uvloop, orjson; this checkout's extensions built in place for it), as "
        "targets <name>@py<version>, right after their own in every round",
    )
    args = parser.parse_args(argv)
    report = run_them(args.rounds, args.seconds, args.compare_with, args.compare_python)
    report["argv"] = list(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write(report, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_of("single_publish", __doc__ or "", 8.0, run, write_report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
