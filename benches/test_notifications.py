"""The pure parts of ``benches/notifications.py``: rate ladders, step rows, the
"behind" rule and the report. Fast, no server; run explicitly (the default test run's
``testpaths = ["tests"]`` and the tests never import benches)::

    python -m pytest -n 0 benches/test_notifications.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benches import loop_profile, peers
from benches import notifications as N
from sse_fast.loadgen._stats import LatencyHistogram
from sse_fast.testing import wait_for


def _histogram(*seconds: float) -> dict[str, Any]:
    histogram = LatencyHistogram()
    for value in seconds:
        histogram.add(value)
    dumped: dict[str, Any] = json.loads(json.dumps(histogram.dump()))  # as read from a file
    return dumped


def _row(**fields: Any) -> dict[str, Any]:
    row = {
        "target": "sse_fast-1w",
        "mode": "batch",
        "offered_per_s": 10_000,
        "published": 30_000,
        "published_per_s": 10_000.0,
        "delivered": 30_000,
        "delivered_per_s": 10_000.0,
        "lost": 0,
        "duplicates": 0,
        "errors": 0,
        "statuses": {},
        "publish_p50_ms": 1.0,
        "publish_p99_ms": 2.0,
        "delivery_p99_ms": 5.0,
        "server_cpu": 0.5,
        "subscribers_cpu": 0.2,
        "load_cpu": 0.3,
        "behind": False,
    }
    return {**row, **fields}


def test_params_quick_is_small_and_short() -> None:
    quick, full = N.params(quick=True), N.params(quick=False)
    assert (quick["subscribers"], full["subscribers"]) == (1000, 10_000)
    assert quick["seconds"] < full["seconds"]
    assert quick["ladders"]["batch"] == full["ladders"]["batch"][:3]
    assert quick["ladders"]["single"] == [0]  # wrk at full speed: one step
    assert N.params(quick=True, subscribers=50, seconds=1.5)["subscribers"] == 50
    assert full["nchan_shared_memory"] == "512m"


def test_climb_stops_at_the_first_step_behind() -> None:
    ran: list[int] = []

    def run_one(rate: int) -> dict[str, Any]:
        ran.append(rate)
        return {"rate": rate, "behind": rate >= 40}

    rows = N.climb([10, 20, 40, 80], run_one)
    assert ran == [10, 20, 40]
    assert [r["behind"] for r in rows] == [False, False, True]
    assert N.climb([], run_one) == []


@pytest.mark.parametrize(
    ("fields", "behind"),
    [
        ({}, False),
        ({"published_per_s": 9_400.0}, True),  # under 95 % of the offered rate published
        ({"published_per_s": 9_600.0}, False),
        ({"delivered": 28_000}, True),  # under 95 % of what was published delivered
        ({"lost": 1}, True),
        ({"missing": 1}, True),  # acked, never delivered
        ({"errors": 1}, True),
        ({"delivery_p99_ms": 2_001.0}, True),
        ({"offered_per_s": 0, "published_per_s": 1.0, "published": 10}, False),  # wrk: no rate
        ({"duplicates": 3}, False),  # reported, not a reason to stop
    ],
)
def test_behind(fields: dict[str, Any], behind: bool) -> None:
    assert N.is_behind(_row(**fields), max_delivery_p99_ms=2000) is behind


def test_step_row_adds_up_the_subscriber_processes() -> None:
    p = N.params(quick=True, seconds=2.0)
    result = {
        "sent": 20_100,
        "acked": 20_000,
        "errors": 0,
        "statuses": {},
        "latency": _histogram(0.001, 0.002, 0.010),
        "cpu": 0.5,
    }
    finals = [
        {"received": 12_000, "lost": 0, "duplicates": 1, "histogram": _histogram(0.003)},
        {"received": 8_000, "lost": 0, "duplicates": 0, "histogram": _histogram(0.004, 0.5)},
        {},  # a subscriber process that did not answer
    ]
    row = N.step_row(
        "sse_fast-1w",
        "stream",
        10_000,
        p,
        result,
        finals,
        server_cpu=0.8,
        subscribers_cpu=0.25,
        took=2.5,
    )
    assert row["published_per_s"] == 10_000 and row["delivered_per_s"] == 10_000
    assert (row["missing"], row["lost"], row["duplicates"]) == (0, 0, 1)
    assert row["publish_p50_ms"] == pytest.approx(2.0, rel=0.02)
    assert row["publish_p99_ms"] == pytest.approx(10.0, rel=0.02)
    assert row["delivery_p99_ms"] == pytest.approx(500.0, rel=0.02)
    assert row["publisher_cpu"] == pytest.approx(0.2)
    assert row["load_cpu"] == pytest.approx(0.45)
    assert row["behind"] is False


def test_step_row_takes_wrk_percentiles_as_given() -> None:
    p = N.params(quick=True, seconds=1.0)
    result = {"sent": 100, "acked": 90, "errors": 10, "p50": 0.0015, "p99": 0.02, "cpu": 0.9}
    row = N.step_row("nchan", "single", 0, p, result, [{"received": 90}], 1.0, 0.1, took=1.0)
    assert (row["publish_p50_ms"], row["publish_p99_ms"]) == (1.5, 20.0)
    assert row["missing"] == 0 and row["behind"] is True  # 10 requests failed


def test_wrk_durations() -> None:
    assert N._wrk_duration("812.00us") == pytest.approx(812e-6)
    assert N._wrk_duration("3.25ms") == pytest.approx(3.25e-3)
    assert N._wrk_duration("1.02s") == pytest.approx(1.02)
    assert N._wrk_duration("1.5m") == pytest.approx(90.0)


def test_best_is_the_highest_step_kept_up_else_the_highest_run() -> None:
    rows = [
        _row(offered_per_s=10_000, delivered_per_s=10_000.0),
        _row(offered_per_s=20_000, delivered_per_s=19_900.0),
        _row(offered_per_s=40_000, delivered_per_s=25_000.0, behind=True),
        _row(mode="stream", offered_per_s=10_000, delivered_per_s=8_000.0, behind=True),
    ]
    assert N.best(rows, "sse_fast-1w", "batch")["offered_per_s"] == 20_000  # type: ignore[index]
    assert N.most(rows, "sse_fast-1w", "batch") == 25_000
    assert N.best(rows, "sse_fast-1w", "stream")["delivered_per_s"] == 8_000  # type: ignore[index]
    assert N.best(rows, "nchan", "single") is None
    assert N.most(rows, "nchan", "single") == 0.0


def test_report(tmp_path: Path) -> None:
    rows = [
        _row(
            target="nchan", mode="single", offered_per_s=0, delivered_per_s=17_000.0, load_cpu=0.95
        ),
        _row(offered_per_s=20_000, delivered_per_s=20_400.0),
        _row(offered_per_s=40_000, delivered_per_s=22_000.0, behind=True, statuses={"500": 3}),
    ]
    report = {
        "quick": True,
        "date": "2026-11-23 09:00",
        "machine": {"cores": 2, "cpu": "test cpu", "python": "3.11.7"},
        "params": N.params(quick=True),
        "targets": ["sse_fast-1w", "nchan"],
        "skipped": {"velithon": "not installed"},
        "versions": {"nchan": "1.3.6"},
        "rows": rows,
    }
    N.write_report(report, tmp_path / "n.md")
    text = (tmp_path / "n.md").read_text()
    assert "`python -m benches.notifications --quick` on 2 cores (test cpu)" in text
    assert "| sse_fast-1w | batch | 20,000 | 10,000 | 20,400 |" in text
    assert "| 1.20x |  | 22,000 |" in text  # vs nchan single; no floor; the most in any step
    assert "| nchan | single | max (wrk) |" in text
    assert "| 0.50 | 0.95 busy | 1.00x |" in text  # the load core was the limit
    assert '{"500": 3}' in text and "| yes |" in text
    assert "Skipped: velithon: not installed" in text
    assert N.targets_of(rows) == ["nchan", "sse_fast-1w"]


def test_report_with_profiles(tmp_path: Path) -> None:
    """``--profile``: a stage's us per event is its share of the busy samples times the
    step's loop us per event; unsampled steps and stages without samples stay out."""
    stages = {name: 0 for name, _ in loop_profile.descriptions()}
    stages.update(send=50, store=25, durable=25)
    profile = {
        "samples": 100,
        "idle_samples": 30,
        "granian": 40,
        "stages": stages,
        "top": [["write (libc.so.6)", 30], ["TopicTable__store (topic_ext.pyx:337)", 9]],
    }
    rows = [
        _row(
            mode="stream",
            offered_per_s=40_000,
            loop_us_per_event=8.0,
            io_us_per_event=9.0,
            profile=profile,
        ),
        _row(mode="stream", offered_per_s=60_000, behind=True),
    ]
    report = {
        "quick": False,
        "date": "2026-11-26 02:00",
        "argv": ["--targets", "sse_fast-1w", "--profile"],
        "machine": {"cores": 2, "cpu": "test cpu", "python": "3.11.7"},
        "params": N.params(quick=False),
        "targets": ["sse_fast-1w"],
        "skipped": {},
        "versions": {},
        "rows": rows,
    }
    N.write_report(report, tmp_path / "p.md")
    text = (tmp_path / "p.md").read_text()
    assert "`python -m benches.notifications --targets sse_fast-1w --profile` on 2" in text
    assert "## Where the event loop's time goes (py-spy)" in text
    header = "| target | way | offered /s | samples | loop us/event | in Granian | gc | send |"
    assert header in text
    assert "|---|---|---:|---:|---:|---:|" + "---:|" * 13 in text  # a column each
    assert "| sse_fast-1w | stream | 40,000 | 100 | 8.0 | 40% |  | 4.00 | 2.00 | 2.00 |  |" in text
    assert text.count("| sse_fast-1w | stream |") == 1 + 2 + 1  # best, every step, one profiled
    assert "| `write (libc.so.6)` | 30.0% |" in text
    assert "![notifications](p.png)" in text


def test_an_unbuilt_checkout_to_compare_with_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--compare-with`` a checkout whose native core was never built: refused at the
    start with how to build it (it used to fail at that checkout's start, after this
    one's whole ladder); built, nothing is missing."""
    (tmp_path / "src_ext").mkdir()
    core = tmp_path / "sse_fast" / "_core"
    core.mkdir(parents=True)
    for name in ("encoder_ext", "ring_ext"):
        (tmp_path / "src_ext" / f"{name}.pyx").write_text("")
    (core / "ring_ext.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    assert peers.unbuilt_extensions(tmp_path) == ["encoder_ext"]
    with pytest.raises(SystemExit) as exit_:
        N.main(["--targets", "sse_fast-1w", "--modes", "batch", "--compare-with", str(tmp_path)])
    assert exit_.value.code == 2
    said = capsys.readouterr().err
    assert "the native core is not built there (encoder_ext missing)" in said
    assert "build_ext --inplace" in said
    (core / "encoder_ext.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    assert peers.unbuilt_extensions(tmp_path) == []


def test_a_checkout_compared_runs_beside_each_sse_fast_target_it_has(tmp_path: Path) -> None:
    """``--compare-with``: the other checkout's one-worker server right after this one's,
    and, when the Redis node runs, a node of that checkout on a Redis of its own right
    after it (the same ways in: an A/B of the Redis path in one run)."""
    (tmp_path / "src_ext").mkdir()
    (tmp_path / "sse_fast" / "_core").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "other",
        ],
        check=True,
    )
    base = peers.SseFastTarget(name="sse_fast-1w", host="127.0.0.1", port=8000)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    redis = N.RedisNodeTarget(**{**fields, "name": N.REDIS_TARGET})
    nchan = peers.SseFastTarget(name="nchan", host="127.0.0.1", port=8001)  # (another: kept)
    ref = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    names = [t.name for t in N.compared([base, redis, nchan], str(tmp_path))]
    assert names == [
        "sse_fast-1w",
        f"sse_fast-1w@{ref}",
        N.REDIS_TARGET,
        f"{N.REDIS_TARGET}@{ref}",
        "nchan",
    ]
    twin = N.compared([base, redis], str(tmp_path))[-1]
    assert isinstance(twin, N.RedisNodeTarget) and twin.source == tmp_path.resolve()
    assert [t.name for t in N.compared([base], str(tmp_path))] == [
        "sse_fast-1w",
        f"sse_fast-1w@{ref}",
    ]
    with pytest.raises(ValueError, match="sse_fast-1w"):
        N.compared([redis], str(tmp_path))


def test_report_says_each_target_against_the_floor_the_same_way_in(tmp_path: Path) -> None:
    """granian-floor's best sustained rate is the measure of each other target's, way
    by way (none for a way the floor did not run, none on the floor's own lines)."""
    rows = [
        _row(target=N.FLOOR_TARGET, offered_per_s=40_000, delivered_per_s=40_000.0),
        _row(offered_per_s=30_000, delivered_per_s=30_000.0),
        _row(mode="stream", offered_per_s=10_000, delivered_per_s=10_000.0),
    ]
    report = {
        "quick": False,
        "date": "2026-11-29 10:00",
        "machine": {"cores": 2, "cpu": "test cpu", "python": "3.11.7"},
        "params": N.params(quick=True),
        "targets": ["sse_fast-1w", N.FLOOR_TARGET],
        "skipped": {},
        "versions": {},
        "rows": rows,
    }
    N.write_report(report, tmp_path / "n.md")
    text = (tmp_path / "n.md").read_text()
    assert "| vs granian-floor (same way) |" in text
    assert "| sse_fast-1w | batch | 30,000 |" in text
    assert "| n/a | 0.75x | 30,000 |" in text
    assert "| n/a |  | 10,000 |" in text  # stream: the floor has no such way in
    assert "| n/a |  | 40,000 |" in text  # the floor's own line
    assert "`benches/peers/floor_app.py`" in text


def test_the_floor_runs_its_app_under_granian_as_sse_fast_does() -> None:
    """The floor target: floor_app under Granian's ASGI with ``sse-fast serve``'s default
    knobs (uvloop, HTTP/1, one worker, the backlog, backpressure, HTTP/1 buffer and
    allocator decay), SCHED_BATCH when chrt is there; the ways in it speaks (not the
    stream, not Redis)."""
    from sse_fast.settings import Settings

    floor = peers.GranianFloorTarget(N.FLOOR_TARGET, "127.0.0.1", 8123)
    argv, cwd, env = floor.command(Path("/tmp"))
    default = Settings()
    assert argv[argv.index("--interface") + 1] == "asgi"
    assert argv[argv.index("--loop") + 1] == "uvloop"
    assert argv[argv.index("--http") + 1] == default.http == "1"
    assert argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--backlog") + 1] == str(peers.BACKLOG)
    assert argv[argv.index("--backpressure") + 1] == str(peers.hard_nofile() - peers.RESERVED_FDS)
    assert argv[argv.index("--http1-buffer-size") + 1] == str(default.http1_buffer_size)
    assert default.allocator_decay == 0
    assert env[peers.ALLOCATOR_VARIABLE] == "dirty_decay_ms:0,muzzy_decay_ms:0"
    assert argv[-1] == "floor_app:app" and (cwd / "floor_app.py").is_file()
    if shutil.which("chrt"):
        assert argv[1:3] == ["--batch", "0"]
    assert "stream" not in N.MODES["floor"] and "calls256" in N.MODES["floor"]


class _Done:
    """What Granian's send returns while a connection's channel has room."""

    def __await__(self) -> Any:
        return iter(())


def _floor_app() -> Any:
    spec = importlib.util.spec_from_file_location(
        "floor_app_under_test", peers.PEERS_DIR / "floor_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_floor_app_hands_each_frame_to_its_topics_streams_in_order() -> None:
    """floor_app: a batch's frames reach every stream of their topic during the publish,
    with the ids it answers; a stream whose channel is full gets its later frames after
    the waiting one, in order; a stream gone is forgotten."""
    floor = _floor_app()

    async def scenario() -> None:
        got: dict[str, list[bytes]] = {"a1": [], "a2": [], "b": []}
        full: dict[str, asyncio.Future[None]] = {}
        gone = {name: asyncio.Event() for name in got}

        def sender(name: str) -> Any:
            def send(message: dict[str, Any]) -> Any:
                if message["type"] == "http.response.body" and message["body"].startswith(b"id"):
                    got[name].append(message["body"])
                    if name == "a2" and len(got[name]) == 1:  # its channel fills
                        full[name] = asyncio.get_running_loop().create_future()
                        return full[name]
                return _Done()

            return send

        def receiver(name: str) -> Any:
            async def receive() -> dict[str, Any]:
                await gone[name].wait()
                return {"type": "http.disconnect"}

            return receive

        streams = [
            asyncio.ensure_future(
                floor.app(
                    {"type": "http", "path": "/events", "query_string": f"topic={t}".encode()},
                    receiver(name),
                    sender(name),
                )
            )
            for name, t in (("a1", "user%2Fa"), ("a2", "user%2Fa"), ("b", "user%2Fb"))
        ]
        await wait_for(
            lambda: len(floor.topics.get("user/a", ())) == 2 and floor.topics.get("user/b"),
            what="the three streams subscribed",
        )
        answer: list[dict[str, Any]] = []
        body = json.dumps(
            {
                "events": [
                    {"topic": "user/a", "data": "x"},
                    {"topic": "user/b", "data": "y"},
                    {"topic": "user/a", "data": "z"},
                    {"topic": "user/nobody", "data": "w"},
                ]
            }
        ).encode()

        async def publish_body() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def answered(message: dict[str, Any]) -> None:
            answer.append(message)

        await floor.app(
            {"type": "http", "path": "/publish", "method": "POST"}, publish_body, answered
        )
        assert json.loads(answer[-1]["body"]) == {"ids": ["1", "2", "3", "4"]}
        assert got["a1"] == [b"id: 1\ndata: x\n\n", b"id: 3\ndata: z\n\n"]
        assert got["b"] == [b"id: 2\ndata: y\n\n"]
        assert got["a2"] == [b"id: 1\ndata: x\n\n"]  # z waits behind the full channel
        full["a2"].set_result(None)
        await wait_for(lambda: len(got["a2"]) == 2, what="the waiting frame sent")
        assert got["a2"] == [b"id: 1\ndata: x\n\n", b"id: 3\ndata: z\n\n"]
        # the drain over, the stream is written during the publish again
        body = json.dumps({"topic": "user/a", "data": "v"}).encode()
        await floor.app(
            {"type": "http", "path": "/publish", "method": "POST"}, publish_body, answered
        )
        assert json.loads(answer[-1]["body"]) == {"ids": ["5"]}
        assert got["a2"][-1] == got["a1"][-1] == b"id: 5\ndata: v\n\n"
        for event in gone.values():
            event.set()
        await asyncio.gather(*streams)
        assert floor.topics == {} and not floor._tasks

    asyncio.run(scenario())
