"""Core micro-benchmarks: encoder, parser and ring; Cython vs pure Python vs sse-starlette.

Run from the repository root::

    python -m benches.bench_core            # full run (~2 minutes), writes benches/results/
    python -m benches.bench_core --quick    # smoke run (short timings, writes to a temp dir)

Method: every scenario (see ``benches/core_scenarios.py``) is first verified (the
Cython and pure twins must return identical bytes / events, and both must match
an independent oracle), then timed with ``timeit.Timer.repeat`` (repeat=7, loop
count calibrated so that each repeat takes >= 0.2 s), then verified again. Per
op we report the best and the median of the 7 repeats. Nothing is subtracted:
figures include the Python-level call overhead of one bound/builtin call from
the timeit loop (or of a small wrapper function for the sse-starlette and
parser cases). timeit disables the garbage collector while timing.

Outputs: ``results/core.md`` (tables, ratios, targets), ``results/core.json``
(all raw numbers and the conditions) and ``results/core.png`` (encode us/op).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from sse_fast._core.native import NATIVE_MODULES

from . import core_scenarios as S
from . import system

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
REPEAT = 7
MIN_TIME = 0.2  # seconds per repeat

GROUP_UNITS = {
    "encode": ("us", 1e6),
    "parser": ("ms", 1e3),
    "ring": ("ns", 1e9),
    "reference": ("ns", 1e9),
}
GROUP_TITLES = {
    "encode": "Encoder (one call per op)",
    "parser": "Parser (one op = a fresh Parser fed the whole stream in 64 KiB chunks, then close())",
    "ring": "Ring (one call per op)",
    "reference": "Reference floors (context for the targets; not an sse_fast implementation)",
}
REFERENCE_DESCRIPTIONS = {
    "ref_call_overhead": "`int()` with no arguments: the cost of one builtin call from the "
    "timeit loop, included in every figure above",
    "ref_orjson_dumps_small_json": "`orjson.dumps(SMALL_JSON)` alone: the serialisation "
    "part of `encode_small_json`",
}


def reference_cases() -> list[S.Case]:
    import orjson

    return [
        S.Case("reference", "ref_call_overhead", "builtin", int, expected_bytes=None),
        S.Case(
            "reference",
            "ref_orjson_dumps_small_json",
            "orjson",
            orjson.dumps,
            (S.SMALL_JSON,),
            nbytes=len(S.SMALL_BYTES),
            expected_bytes=S.SMALL_BYTES,
        ),
    ]


def describe(scenario: str) -> str:
    return REFERENCE_DESCRIPTIONS.get(scenario) or S.description(scenario)


IMPL_LABELS = {
    S.EXT: "sse_fast Cython (_encoder_ext / _parser_ext / _ring_ext)",
    S.PY: "sse_fast pure Python (_encoder_py / _parser_py / _ring_py)",
    S.SS: "sse-starlette ServerSentEvent(...).encode()",
}


# ----------------------------------------------------------------- conditions


def _cpu_model() -> str:
    try:
        model = system.cpu_model()
    except OSError:
        model = None
    return model or platform.processor() or "unknown"


def _cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of CPU time (all cores) not idle during ``seconds``, in percent."""

    def sample() -> tuple[int, int]:
        fields = system.cpu_times()
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields)

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return round(100.0 * (1 - (idle1 - idle0) / total), 1) if total else None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def _extension_builds() -> dict[str, Any]:
    """Which .so was loaded, when it was built, and whether its .pyx changed since."""
    import Cython

    out: dict[str, Any] = {}
    for name in NATIVE_MODULES:
        mod = importlib.import_module(f"sse_fast._core.{name}_ext")
        so = Path(mod.__file__ or "")
        pyx = ROOT / "src_ext" / f"{name}_ext.pyx"
        c_file = pyx.with_suffix(".c")
        generated_by = None
        try:
            with c_file.open() as fh:
                first = fh.readline()
            if "Cython" in first:
                generated_by = first.strip().strip("/* ").strip()
        except OSError:
            pass
        so_mtime = so.stat().st_mtime if so.exists() else None
        pyx_mtime = pyx.stat().st_mtime if pyx.exists() else None
        out[name] = {
            "so": str(so.relative_to(ROOT)) if so.is_relative_to(ROOT) else str(so),
            "so_sha256_16": _sha256(so),
            "so_mtime": _iso(so_mtime),
            "pyx_sha256_16": _sha256(pyx),
            "pyx_mtime": _iso(pyx_mtime),
            "pyx_newer_than_so": bool(so_mtime and pyx_mtime and pyx_mtime > so_mtime),
            "c_generated_by": generated_by,
        }
    out["installed_cython"] = getattr(Cython, "__version__", "?")
    return out


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def conditions_before() -> dict[str, Any]:
    import Cython

    load = _loadavg()
    busy = _cpu_busy(1.0)
    ncpu = os.cpu_count() or 1
    idle = bool(load is not None and load[0] < 0.3 * ncpu and (busy is None or busy < 10.0))
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": ncpu,
        "cpu_affinity": affinity,
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": sys.version.replace("\n", " "),
        "python_implementation": platform.python_implementation(),
        "cython": getattr(Cython, "__version__", "?"),
        "orjson": _version("orjson"),
        "sse_starlette": _version("sse-starlette"),
        "starlette": _version("starlette"),
        "sse_fast": _version("sse_fast"),
        "pytest_benchmark": _version("pytest-benchmark"),
        "matplotlib": _version("matplotlib"),
        "git_head": _git("rev-parse", "--short=12", "HEAD"),
        "git_dirty_paths": (
            _git("status", "--porcelain", "--", "sse_fast", "src_ext") or ""
        ).splitlines(),
        "extensions": _extension_builds(),
        "loadavg_before": load,
        "cpu_busy_percent_1s_before": busy,
        "idle_before": idle,
        "idle_rule": "1-min load < 0.3 x cores and < 10% CPU busy in a 1 s sample before the run",
    }


# ------------------------------------------------------------------- timing


def measure(case: S.Case, repeat: int, min_time: float) -> dict[str, Any]:
    timer = case.timer()
    number = 1
    while True:  # calibrate: a batch of >= min_time / 10, then scale
        elapsed = timer.timeit(number)
        if elapsed >= min_time / 10:
            break
        number *= 10
    number = max(1, math.ceil(number * min_time * 1.1 / elapsed))
    raw = timer.repeat(repeat=repeat, number=number)
    per_op = [t / number for t in raw]
    return {
        "number": number,
        "repeat": repeat,
        "repeat_seconds": [round(t, 6) for t in raw],
        "per_op_s": per_op,
        "best_s": min(per_op),
        "median_s": statistics.median(per_op),
    }


# -------------------------------------------------------------- verification


def verify(cases: list[S.Case]) -> list[str]:
    """Check every case against its oracle and the twins against each other."""
    done: list[str] = []
    results: dict[tuple[str, str], Any] = {}
    for case in cases:
        results[(case.scenario, case.impl)] = case.check()
        done.append(f"{case.scenario}/{case.impl}: matches the oracle")
    for scenario, (group, _impls) in S.SCENARIOS.items():
        ext, py = results[(scenario, S.EXT)], results[(scenario, S.PY)]
        if group == "parser":
            spec_stream = S.PARSER_SPECS[scenario][0]
            chunks = S.chunks_of(spec_stream)
            a = S.parse_all(S.PARSERS[S.EXT].Parser, chunks)
            b = S.parse_all(S.PARSERS[S.PY].Parser, chunks)
            assert a == b, f"{scenario}: Cython and pure parsers disagree"
            # And with a hostile chunking (7-byte chunks, CRLF line ends) on a prefix.
            crlf = spec_stream[:200_000].replace(b"\n", b"\r\n")
            a = S.parse_all(S.PARSERS[S.EXT].Parser, S.chunks_of(crlf, 7))
            b = S.parse_all(S.PARSERS[S.PY].Parser, S.chunks_of(crlf, 7))
            assert a == b, f"{scenario}: parsers disagree on CRLF / 7-byte chunks"
            done.append(f"{scenario}: Cython == pure events (64 KiB chunks; CRLF 7-byte chunks)")
        elif scenario.startswith("ring_publish"):
            assert ext == py, f"{scenario}: publish returned {ext} vs {py}"
            done.append(f"{scenario}: Cython == pure sequence numbers and ring state")
        else:
            assert type(ext) is type(py) and ext == py, f"{scenario}: Cython != pure output"
            done.append(f"{scenario}: Cython output == pure output (byte-identical)")
    return done


# ------------------------------------------------------------------ reports


def build_rows(
    cases: list[S.Case], timings: dict[tuple[str, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        t = timings[(case.scenario, case.impl)]
        row: dict[str, Any] = {
            "group": case.group,
            "scenario": case.scenario,
            "impl": case.impl,
            "primary": case.primary,
            "note": case.note,
            "nbytes_per_op": case.nbytes,
            **t,
        }
        if case.nbytes:
            row["mb_per_s_best"] = case.nbytes / t["best_s"] / 1e6
            row["mb_per_s_median"] = case.nbytes / t["median_s"] / 1e6
            row["gb_per_s_best"] = row["mb_per_s_best"] / 1e3
        rows.append(row)
    by_key = {(r["scenario"], r["impl"]): r for r in rows}
    for row in rows:
        ss = by_key.get((row["scenario"], S.SS))
        py = by_key.get((row["scenario"], S.PY))
        row["speedup_vs_sse_starlette"] = ss["best_s"] / row["best_s"] if ss else None
        row["speedup_vs_pure"] = py["best_s"] / row["best_s"] if py else None
    return rows


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {(r["scenario"], r["impl"]): r for r in rows}
    small = by_key[("encode_small_json", S.EXT)]
    big = by_key[("encode_text_64k", S.EXT)]
    parse = by_key[("parse_small_10k", S.EXT)]
    pub = by_key[("ring_publish", S.EXT)]
    out = [
        {
            "target": "small JSON event encode <= 0.3 us (Cython)",
            "best": small["best_s"] * 1e6,
            "median": small["median_s"] * 1e6,
            "unit": "us",
            "met_best": small["best_s"] * 1e6 <= 0.3,
            "met_median": small["median_s"] * 1e6 <= 0.3,
        },
        {
            "target": "small JSON event >= 14x faster than sse-starlette",
            "best": small["speedup_vs_sse_starlette"],
            "median": by_key[("encode_small_json", S.SS)]["median_s"] / small["median_s"],
            "unit": "x",
        },
        {
            "target": "64 KB text encode >= 2 GB/s (Cython)",
            "best": big["gb_per_s_best"],
            "median": big["mb_per_s_median"] / 1e3,
            "unit": "GB/s",
        },
        {
            "target": "parser >= 200 MB/s on small events (Cython)",
            "best": parse["mb_per_s_best"],
            "median": parse["mb_per_s_median"],
            "unit": "MB/s",
        },
        {
            "target": "ring publish < 200 ns (Cython, full ring, evicting)",
            "best": pub["best_s"] * 1e9,
            "median": pub["median_s"] * 1e9,
            "unit": "ns",
            "met_best": pub["best_s"] * 1e9 < 200,
            "met_median": pub["median_s"] * 1e9 < 200,
        },
    ]
    for t in out[1:4]:
        limit = {"x": 14, "GB/s": 2, "MB/s": 200}[t["unit"]]
        t["met_best"] = t["best"] >= limit
        t["met_median"] = t["median"] >= limit
    return out


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    return f"{x:,.{decimals}f}"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _conditions_md(cond: dict[str, Any]) -> list[str]:
    ext = cond["extensions"]
    stale = [k for k in ("encoder", "parser", "ring") if ext[k]["pyx_newer_than_so"]]
    lines = [
        "| Condition | Value |",
        "|---|---|",
        f"| Date (UTC) | {cond['date_utc']} |",
        f"| CPU | {cond['cpu_model']} |",
        f"| Cores (os.cpu_count / affinity) | {cond['cpu_count']} / {cond['cpu_affinity']} |",
        f"| Kernel | {cond['kernel']} ({cond['machine']}) |",
        f"| Python | {cond['python']} |",
        f"| Cython (installed) | {cond['cython']} |",
        f"| Cython (generated the .c) | {ext['encoder']['c_generated_by']} |",
        f"| orjson | {cond['orjson']} |",
        f"| sse-starlette (starlette) | {cond['sse_starlette']} ({cond['starlette']}) |",
        f"| sse_fast | {cond['sse_fast']}, git {cond['git_head']} |",
        f"| Uncommitted changes in sse_fast/ src_ext/ | "
        f"{', '.join(cond['git_dirty_paths']) or 'none'} |",
        "| Extensions built (.so mtime) | "
        + ", ".join(f"{k} {ext[k]['so_mtime']}" for k in ("encoder", "parser", "ring"))
        + " |",
        f"| .pyx newer than its .so | {', '.join(stale) or 'none'} |",
        f"| Load average before (1/5/15 min) | {cond['loadavg_before']} |",
        f"| CPU busy in 1 s before the run | {cond['cpu_busy_percent_1s_before']} % |",
        f"| CPU otherwise idle before the run | {'yes' if cond['idle_before'] else 'NO'} "
        f"({cond['idle_rule']}) |",
        f"| Load average after | {cond.get('loadavg_after')} |",
        f"| Run time | {cond.get('run_seconds', 0):.0f} s |",
    ]
    return lines


def write_markdown(
    path: Path,
    cond: dict[str, Any],
    rows: list[dict[str, Any]],
    tgts: list[dict[str, Any]],
    checks: list[str],
    repeat: int,
    min_time: float,
) -> None:
    out = [
        "# sse_fast core benchmarks",
        "",
        "Generated by `python -m benches.bench_core` (see `benches/README.md`). "
        "Raw numbers: `core.json`; chart: `core.png`.",
        "",
        "## Conditions",
        "",
        *_conditions_md(cond),
        "",
        "## Method",
        "",
        f"* `timeit.Timer.repeat(repeat={repeat}, number=N)` with N calibrated so that each "
        f"repeat takes >= {min_time} s; per-op time = repeat time / N. **best** = fastest "
        "repeat, **median** = median of the repeats. timeit disables the GC while timing.",
        "* Nothing is subtracted: figures include the Python call overhead of one bound / "
        "builtin call from the timeit loop (all names are locals). sse-starlette and parser "
        "ops go through a small Python wrapper function (one extra frame, ~0.05 us; "
        "negligible for them). `ring_publish_with_id` includes an `itertools.cycle` `next()`.",
        "* Every case was verified before and after timing: Cython and pure twins return "
        "byte-identical output, and both match an independently built expected frame / event "
        "list; sse-starlette output is parsed back and must give the same events.",
        "* Throughput (MB/s, GB/s; decimal units) = bytes per op / best (or median) time. "
        "Encoder: payload bytes of `data` (not the frame). Parser: stream bytes. Ring reads: "
        "bytes returned.",
        "* `x vs sse-starlette` and `x vs pure` = the other implementation's best time / this "
        "row's best time (> 1 means this row is faster).",
        "",
        "## Targets",
        "",
        "| Target | Best | Median | Met (best) | Met (median) |",
        "|---|---|---|---|---|",
    ]
    for t in tgts:
        out.append(
            f"| {t['target']} | {_fmt(t['best'])} {t['unit']} | {_fmt(t['median'])} {t['unit']} "
            f"| {'**met**' if t['met_best'] else '**not met**'} "
            f"| {'met' if t['met_median'] else 'not met'} |"
        )
    out.append("")
    by_key = {(r["scenario"], r["impl"]): r for r in rows}
    out += [
        "## Summary (best per op; details and medians below)",
        "",
        "| Scenario | Cython | pure | sse-starlette | Cython x vs sse-starlette "
        "| Cython x vs pure | Cython MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in dict.fromkeys(r["scenario"] for r in rows if r["group"] != "reference"):
        ext = by_key.get((scenario, S.EXT))
        if ext is None:
            continue
        unit, scale = GROUP_UNITS[ext["group"]]

        def cell(
            impl: str, scenario: str = scenario, unit: str = unit, scale: float = scale
        ) -> str:
            row = by_key.get((scenario, impl))
            return f"{_fmt(row['best_s'] * scale)} {unit}" if row else "–"

        out.append(
            f"| `{scenario}` | {cell(S.EXT)} | {cell(S.PY)} | {cell(S.SS)} "
            f"| {_ratio(ext['speedup_vs_sse_starlette'])} | {_ratio(ext['speedup_vs_pure'])} "
            f"| {_fmt(ext.get('mb_per_s_best'))} |"
        )
    out.append("")
    for group in ("encode", "parser", "ring", "reference"):
        unit, scale = GROUP_UNITS[group]
        group_rows = [r for r in rows if r["group"] == group]
        if not group_rows:
            continue
        out += [f"## {GROUP_TITLES[group]}", ""]
        scenarios = list(dict.fromkeys(r["scenario"] for r in group_rows))
        out.append("Scenarios:")
        out.append("")
        for scenario in scenarios:
            out.append(f"* `{scenario}`: {describe(scenario)}")
        out += [
            "",
            f"| Scenario | Implementation | best {unit}/op | median {unit}/op | MB/s (best) "
            f"| GB/s (best) | x vs sse-starlette | x vs pure | N x repeat | Note |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in group_rows:
            out.append(
                f"| `{r['scenario']}` | {r['impl']} | {_fmt(r['best_s'] * scale)} "
                f"| {_fmt(r['median_s'] * scale)} | {_fmt(r.get('mb_per_s_best'))} "
                f"| {_fmt(r.get('gb_per_s_best'))} | {_ratio(r['speedup_vs_sse_starlette'])} "
                f"| {_ratio(r['speedup_vs_pure'])} | {r['number']} x {r['repeat']} "
                f"| {r['note']} |"
            )
        out.append("")
    out += [
        "## Implementations",
        "",
        *[f"* `{k}`: {v}" for k, v in IMPL_LABELS.items()],
        f"* `{S.SS_PRESER}`: ServerSentEvent(json_str, ...).encode() with the JSON string "
        "made before timing (what sse-starlette costs if the caller already has a str).",
        f"* `{S.SS_JSONSSE}`: sse-starlette's JSONServerSentEvent(dict, ...).encode() "
        "(stdlib json).",
        "",
        "## Verification (all passed, before and after timing)",
        "",
        *[f"* {c}" for c in checks],
        "",
    ]
    path.write_text("\n".join(out))


def write_chart(path: Path, cond: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    enc = [r for r in rows if r["group"] == "encode" and r["primary"]]
    scenarios = list(dict.fromkeys(r["scenario"] for r in enc))
    impls = [S.EXT, S.PY, S.SS]
    colors = {S.EXT: "#1f77b4", S.PY: "#ff7f0e", S.SS: "#7f7f7f"}
    labels = {
        S.EXT: "sse_fast Cython",
        S.PY: "sse_fast pure Python",
        S.SS: "sse-starlette ServerSentEvent",
    }
    by_key = {(r["scenario"], r["impl"]): r for r in enc}
    fig, ax = plt.subplots(figsize=(13, 6.5), dpi=110)
    width = 0.27
    for k, impl in enumerate(impls):
        xs, ys = [], []
        for i, scenario in enumerate(scenarios):
            row = by_key.get((scenario, impl))
            if row:
                xs.append(i + (k - 1) * width)
                ys.append(row["best_s"] * 1e6)
        bars = ax.bar(xs, ys, width, label=labels[impl], color=colors[impl])
        for bar, y in zip(bars, ys, strict=True):
            ax.annotate(
                _fmt(y),
                (bar.get_x() + bar.get_width() / 2, y),
                ha="center",
                va="bottom",
                fontsize=7.5,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_yscale("log")
    ax.set_ylabel("µs per op (best of 7, log scale; lower is better)")
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(
        [s.replace("encode_", "").replace("_", "\n", 1) for s in scenarios], fontsize=9
    )
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left")
    ax.set_title(
        "sse_fast encode: µs/op per implementation\n"
        f"{cond['cpu_model']}, {cond['cpu_count']} cores, Python "
        f"{platform.python_version()}, {cond['date_utc'][:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: repeat=3, 0.02 s per repeat, output to a temp dir",
    )
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--only", default=None, help="substring filter on scenario names")
    args = parser.parse_args(argv)
    repeat, min_time = (3, 0.02) if args.quick else (REPEAT, MIN_TIME)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="bench_core_")) if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    cond = conditions_before()
    print(
        f"CPU {cond['cpu_model']} x{cond['cpu_count']}, load {cond['loadavg_before']}, "
        f"busy {cond['cpu_busy_percent_1s_before']}%, idle={cond['idle_before']}",
        flush=True,
    )
    cases = S.all_cases()
    if args.only:
        cases = [c for c in cases if args.only in c.scenario]
    full = not args.only
    if full:
        cases += reference_cases()
    if full:
        checks = verify([c for c in cases if c.group != "reference"])
        for case in cases:
            if case.group == "reference":
                case.check()
    else:
        checks = []
        for case in cases:
            case.check()
            checks.append(f"{case.scenario}/{case.impl}: matches the oracle")
    print(f"verified {len(checks)} checks", flush=True)

    timings: dict[tuple[str, str], dict[str, Any]] = {}
    for case in cases:
        t = measure(case, repeat, min_time)
        timings[(case.scenario, case.impl)] = t
        unit, scale = GROUP_UNITS[case.group]
        extra = f"  {case.nbytes / t['best_s'] / 1e6:10.1f} MB/s" if case.nbytes else ""
        print(
            f"{case.scenario:30} {case.impl:38} best {t['best_s'] * scale:10.3f} {unit}  "
            f"median {t['median_s'] * scale:10.3f} {unit}{extra}",
            flush=True,
        )
    for case in cases:  # again after timing: state-carrying cases (ring) must still be right
        case.check()
    checks.append("all cases re-checked against their oracle after timing")

    cond["loadavg_after"] = _loadavg()
    cond["run_seconds"] = round(time.perf_counter() - start, 1)
    cond["timing"] = {
        "repeat": repeat,
        "min_seconds_per_repeat": min_time,
        "gc": "disabled by timeit while timing",
    }
    rows = build_rows(cases, timings)
    tgts = targets(rows) if full else []

    (out_dir / "core.json").write_text(
        json.dumps(
            {
                "conditions": cond,
                "targets": tgts,
                "results": rows,
                "verification": checks,
                "scenarios": {r["scenario"]: describe(r["scenario"]) for r in rows},
            },
            indent=2,
        )
        + "\n"
    )
    write_markdown(out_dir / "core.md", cond, rows, tgts, checks, repeat, min_time)
    write_chart(out_dir / "core.png", cond, rows)
    for t in tgts:
        print(
            f"TARGET {t['target']}: {_fmt(t['best'])} {t['unit']} (median "
            f"{_fmt(t['median'])}) -> {'met' if t['met_best'] else 'NOT MET'}"
        )
    print(f"wrote {out_dir}/core.md, core.json, core.png in {cond['run_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
