"""Edge-server benchmarks (issue: the notification edge), one server at a time,
same load generator, same machine, same run.

Scenarios:

* ``steady``: 10,000 connections on one topic, 10 publishes/s;
* ``saturation``: 15,000 connections, publish rate raised step by step (several
  concurrent publishers) until delivery falls behind; the best delivered
  events per server CPU-second is reported;
* ``two-workers``: 30,000 connections across two workers at 1 publish/s;
* ``persistence``: 15,000 connections on one topic, 4 publishers at 5
  publishes/s each, one worker pinned to core 1 and the load to core 0,
  ``--persistence off`` and ``interval`` (the default) in turn, the order
  reversed each round (``--rounds``, default 2); with ``--compare-with``
  the other checkout's two right after this one's. Delivered events/s and
  the ratio interval / off within each round (issue 39: at least 0.95x).

Targets come from ``benches.peers`` (sse_fast with 1 and 2 workers, Nchan,
sse-starlette under uvicorn with one asyncio.Queue per subscriber). A peer
that cannot run here is reported as skipped with the reason.

    python -m benches.server_bench [--quick] [--scenarios steady,saturation,two-workers]
    python -m benches.server_bench --scenarios persistence --targets sse_fast-1w \
        --compare-with DIR --out benches/results/persistence_saturation

Writes ``benches/results/server.md``, ``server.json`` and ``server.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benches import peers
from benches.system import machine
from sse_fast.loadgen import Result, run_load

RESULTS = Path(__file__).parent / "results"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_target(target: peers.Target, **load: Any) -> Result:
    target.start()
    try:
        return run_load(
            **target.load_arguments(),
            progress=log,
            **load,
        )
    finally:
        target.stop()
        time.sleep(2)  # let the kernel finish tearing connections down


def _with_compared(targets: dict[str, peers.Target], names: tuple[str, ...]) -> list[str]:
    """``names``, with the compared checkout (``--compare-with``) right after sse_fast-1w."""
    out = []
    for name in names:
        out.append(name)
        if name == "sse_fast-1w":
            out += sorted(n for n in targets if n.startswith("sse_fast-1w@"))
    return out


def steady_load(quick: bool) -> dict[str, Any]:
    """The steady scenario's load (``run_load``'s arguments), also run by
    ``before_after``."""
    return {
        "connections": 2000 if quick else 10_000,
        "rate": 10,
        "duration": 5 if quick else 15,
        "warmup": 3,
    }


def steady(targets: dict[str, peers.Target], quick: bool) -> list[dict[str, Any]]:
    out = []
    for name in _with_compared(targets, ("sse_fast-1w", "nchan", "sse-starlette")):
        if name in targets:
            out.append(asdict(run_target(targets[name], **steady_load(quick))))
    return out


def saturation(targets: dict[str, peers.Target], quick: bool) -> list[dict[str, Any]]:
    connections = 2000 if quick else 15_000
    rates = [10, 40] if quick else [5, 10, 20, 40, 80]
    out = []
    for name in _with_compared(targets, ("sse_fast-1w", "nchan")):
        if name not in targets:
            continue
        for rate in rates:
            result = run_target(
                targets[name],
                connections=connections,
                rate=rate,
                publishers=8,
                duration=5 if quick else 10,
                warmup=2,
            )
            row = asdict(result)
            row["scenario_rate"] = rate
            out.append(row)
            if result.published < 0.9 * rate * result.duration:
                log(f"{name}: publishing fell behind at {rate}/s; stopping the ramp")
                break
    return out


def two_workers(targets: dict[str, peers.Target], quick: bool) -> list[dict[str, Any]]:
    connections = 4000 if quick else 30_000
    out = []
    for name in ("sse_fast-2w", "nchan-2w"):
        if name in targets:
            result = run_target(
                targets[name],
                connections=connections,
                rate=1,
                duration=5 if quick else 15,
                warmup=3,
                processes=4 if not quick else 2,
            )
            out.append(asdict(result))
    return out


PERSISTENCE_MODES = ("off", "interval")


def persistence(
    targets: dict[str, peers.Target], quick: bool, rounds: int = 2
) -> list[dict[str, Any]]:
    """Many streams, a few publishers: ``--persistence off`` against ``interval`` on one
    pinned worker (see the module doc). Rows carry ``persistence``, ``round`` and
    ``checkout`` (the target it was derived from)."""
    from benches.notifications import LOAD_CORE, SERVER_CORE, pin
    from benches.persistence import PersistentTarget

    connections = 2000 if quick else 15_000
    bases = [
        t
        for name, t in targets.items()
        if name.startswith("sse_fast-1w") and isinstance(t, peers.SseFastTarget)
    ]
    variants = [
        (
            base.name,
            mode,
            PersistentTarget(
                f"{base.name} {mode}",
                base.host,
                peers.free_ports(base.host, 1)[0],
                heartbeat=base.heartbeat,
                source=base.source,
                persistence=mode,
            ),
        )
        for base in bases
        for mode in PERSISTENCE_MODES
    ]
    affinity = os.sched_getaffinity(0)
    pin([os.getpid()], LOAD_CORE)  # the load's processes inherit it
    out = []
    try:
        for index in range(rounds):
            modes = PERSISTENCE_MODES if index % 2 == 0 else PERSISTENCE_MODES[::-1]
            for checkout in [base.name for base in bases]:
                for mode in modes:
                    target = next(t for c, m, t in variants if c == checkout and m == mode)
                    target.start()
                    try:
                        pin(target.server_pids(), SERVER_CORE)  # every thread, once started
                        result = run_load(
                            **target.load_arguments(),
                            progress=log,
                            connections=connections,
                            rate=20,
                            publishers=4,
                            duration=5 if quick else 10,
                            warmup=2,
                            strict_window=True,
                        )
                    finally:
                        target.stop()
                        time.sleep(2)
                    row = asdict(result)
                    row.update(persistence=mode, round=index + 1, checkout=checkout)
                    out.append(row)
    finally:
        os.sched_setaffinity(0, affinity)
    return out


def persistence_table(rows: list[dict[str, Any]]) -> list[str]:
    """Each round's delivered/s per checkout and mode, and interval / off in that round."""
    head = [
        "checkout",
        "round",
        "persistence",
        "connections",
        "publishes/s",
        "delivered/s",
        "interval / off",
        "p50 ms",
        "p99 ms",
        "server cores",
        "server CPU us/delivery",
        "lost",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key = {(r["checkout"], r["round"], r["persistence"]): r for r in rows}
    for r in rows:
        off = by_key.get((r["checkout"], r["round"], "off"))
        ratio = (
            f"{r['delivered_per_second'] / off['delivered_per_second']:.2f}x"
            if r["persistence"] != "off" and off and off["delivered_per_second"]
            else ""
        )
        cpu = r.get("server_cpu_seconds")
        lines.append(
            "| "
            + " | ".join(
                [
                    r["checkout"],
                    str(r["round"]),
                    r["persistence"],
                    f"{r['connected']:,}/{r['connections']:,}",
                    f"{r['published'] / r['duration']:.1f}" if r["duration"] else "-",
                    f"{r['delivered_per_second']:,.0f}",
                    ratio,
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['server_cores_used']:.2f}" if r.get("server_cores_used") else "-",
                    f"{cpu * 1e6 / r['delivered']:.2f}" if cpu and r["delivered"] else "-",
                    str(r["lost"]),
                ]
            )
            + " |"
        )
    return lines


def table(rows: list[dict[str, Any]], extra: str | None = None) -> list[str]:
    head = [
        "target",
        "connections",
        "publishes/s",
        "delivered/expected",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "server cores",
        "delivered per core-s",
        "RSS/conn KB",
        "lost",
        "dup",
    ]
    if extra:
        head.insert(2, extra)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["target"],
            f"{r['connected']:,}/{r['connections']:,}",
            f"{r['published'] / r['duration']:.1f}" if r["duration"] else "-",
            f"{r['delivered']:,}/{r['expected']:,}",
            f"{r['delivered_per_second']:,.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['p999_ms']:.1f}",
            f"{r['max_ms']:.1f}",
            f"{r['server_cores_used']:.2f}" if r.get("server_cores_used") else "-",
            f"{r['delivered_per_server_core_second']:,.0f}"
            if r.get("delivered_per_server_core_second")
            else "-",
            f"{r['rss_per_connection_kb']:.1f}" if r.get("rss_per_connection_kb") else "-",
            str(r["lost"]),
            str(r["duplicates"]),
        ]
        if extra:
            cells.insert(2, str(r.get("scenario_rate", "")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    sat = report["scenarios"].get("saturation", [])
    for name in sorted({r["target"] for r in sat}):
        rows = [r for r in sat if r["target"] == name]
        axes[0].plot(
            [r["scenario_rate"] for r in rows],
            [r["delivered_per_server_core_second"] or 0 for r in rows],
            "o-",
            label=name,
        )
        axes[1].plot(
            [r["scenario_rate"] for r in rows], [r["p99_ms"] for r in rows], "o-", label=name
        )
    axes[0].set(
        title="Saturation (15,000 conns): delivered per server core-s",
        xlabel="requested publishes/s",
        ylabel="events / core-s",
    )
    axes[1].set(
        title="Saturation: p99 delivery latency", xlabel="requested publishes/s", ylabel="ms"
    )
    rows = [r for rs in report["scenarios"].values() for r in rs if r.get("rss_per_connection_kb")]
    names = [f"{r['target']}\n{r['connected']:,}" for r in rows]
    axes[2].bar(range(len(rows)), [r["rss_per_connection_kb"] for r in rows])
    axes[2].set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=7)
    axes[2].set(title="Server RSS per idle connection", ylabel="KB")
    for ax in axes[:2]:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, fast smoke run")
    parser.add_argument("--scenarios", default="steady,saturation,two-workers")
    parser.add_argument("--out", default=str(RESULTS / "server"))
    parser.add_argument(
        "--compare-with",
        metavar="DIR",
        help="also run sse_fast (1 worker) from this checkout of another commit, built in "
        "place (git worktree add DIR REF && cd DIR && python setup.py build_ext --inplace, "
        "with setuptools>=77 and cython; refused at once when it is not built), "
        "as target sse_fast-1w@REF, right after this one in every step",
    )
    parser.add_argument(
        "--targets", help="run only these targets (comma-separated names), e.g. sse_fast-1w"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the persistence scenario")
    args = parser.parse_args(argv)
    info = machine()
    log(f"machine: {info}")
    one, skipped = peers.available_targets(heartbeat=15.0, workers=1)
    two, skipped_two = peers.available_targets(heartbeat=15.0, workers=2)
    targets = {t.name: t for t in one}
    for target in two:
        if target.name == "sse_fast-2w":
            targets[target.name] = target
        elif target.name == "nchan":
            target.name = "nchan-2w"
            targets[target.name] = target
    if args.compare_with:
        base = targets["sse_fast-1w"]
        assert isinstance(base, peers.SseFastTarget)
        try:
            other = peers.checkout_target(base, args.compare_with)
        except ValueError as exc:  # not built: said before anything runs
            parser.error(f"--compare-with {exc}")
        targets[other.name] = other
    if args.targets:
        wanted = set(args.targets.split(",")) | {n for n in targets if n.startswith("sse_fast-1w@")}
        targets = {n: t for n, t in targets.items() if n in wanted}
    report: dict[str, Any] = {
        "machine": info,
        "skipped": {**skipped_two, **skipped},
        "versions": {},
        "scenarios": {},
    }
    for target in targets.values():
        report["versions"][target.name] = target.versions()
    chosen = args.scenarios.split(",")
    runners = {"steady": steady, "saturation": saturation, "two-workers": two_workers}
    for name in chosen:
        log(f"scenario {name}")
        if name == "persistence":
            report["scenarios"][name] = persistence(targets, args.quick, args.rounds)
        else:
            report["scenarios"][name] = runners[name](targets, args.quick)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Edge server benchmarks",
        "",
        "Generated by `python -m benches.server_bench` "
        + ("(--quick) " if args.quick else "")
        + "with `sse_fast/loadgen/` (Python/uvloop clients using sse_fast's parser, "
        "HTTP/1.1 chunked, on the same 2-core machine as the servers).",
        "",
        "## Conditions",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- {k}: {v}" for k, v in report["versions"].items()]
    lines += [f"- skipped {k}: {v}" for k, v in report["skipped"].items()]
    lines += [
        "- payload: 64-byte JSON string with publish wall time and sequence; heartbeat 15 s",
        "- server cores = server CPU-seconds (all its processes and threads) / measured "
        "window; delivered per core-s = delivered events / server CPU-seconds",
        "",
    ]
    titles = {
        "steady": "10,000 connections, one topic, 10 publishes/s",
        "saturation": "Saturation: 15,000 connections, rising publish rate "
        "(8 concurrent publishers)",
        "two-workers": "30,000 connections across two workers, 1 publish/s",
        "persistence": "Persistence at saturation: one topic, 4 publishers at 5/s each, "
        "one worker on core 1, the load on core 0",
    }
    for name in chosen:
        lines += [f"## {titles[name]}", ""]
        if name == "persistence":
            lines += [
                "Each row a fresh server (`--persistence MODE`, its own data directory), "
                "pinned (every thread) to core 1; subscribers and publishers on core 0. "
                f"Warm-up 2 s, {5 if args.quick else 10} s measured (publishers stop at its "
                "end), 3 s drain. Modes in turn, the order reversed each round; a compared "
                "checkout's right after this one's. *interval / off*: delivered/s within the "
                "same checkout and round. Server CPU per delivery: the worker's CPU seconds "
                "over the window and drain / delivered events.",
                "",
            ]
            lines += persistence_table(report["scenarios"][name])
        else:
            lines += table(
                report["scenarios"][name], "requested rate" if name == "saturation" else None
            )
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    try:
        if set(chosen) - {"persistence"}:  # its table is the whole result
            plot(report, out.with_suffix(".png"))
    except Exception as exc:  # pragma: no cover - plotting is optional
        log(f"plot failed: {exc}")
    log(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
