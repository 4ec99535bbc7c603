"""The pure parts of ``benches/redis_scale.py``: a run's row, the ratios against one
Redis and the report, from canned results. Fast, no server::

    python -m pytest -n 0 benches/test_redis_scale.py
"""

from __future__ import annotations

from typing import Any

from benches import redis_scale as R


def _result(published: int = 8000, lost: int = 0, **fields: Any) -> dict[str, Any]:
    """What ``measure`` gets from run_load (a Result as a dict), 1,000 topics for 8 s."""
    return {
        "publish_rate": 1000.0,
        "published": published,
        "duration": 8.0,
        "expected": published,
        "delivered": published - lost,
        "lost": lost,
        "p50_ms": 1.0,
        "p99_ms": 3.0,
        "server_cpu_seconds": 4.0,
        **fields,
    }


def test_a_row_says_the_cpu_per_thousand_publishes() -> None:
    row = R.row_of("shards", _result(), redis_cpu=1.2)
    assert row["layout"] == "shards" and row["achieved"] == 1000.0
    assert row["redis_cpu_ms_per_1k"] == 150.0  # 1.2 s over 8,000 publishes
    assert row["server_cpu_ms_per_1k"] == 500.0
    # nothing published: no figure per publish, not a division by zero
    empty = R.row_of("one", _result(published=0), redis_cpu=0.5)
    assert empty["redis_cpu_ms_per_1k"] is None and empty["server_cpu_ms_per_1k"] is None


def test_ratios_compare_each_layout_with_one_redis_at_the_same_rate() -> None:
    rows = [
        R.row_of("one", _result(), redis_cpu=1.0),
        R.row_of("partitioned", _result(published=7800), redis_cpu=1.17),
        R.row_of("shards", _result(published=7000), redis_cpu=1.4),
        R.row_of("shards", _result(publish_rate=2000.0), redis_cpu=1.0),  # no "one" at 2000
        R.row_of("partitioned", _result(lost=3), redis_cpu=1.0),
    ]
    got = R.ratios(rows)
    assert [(q["layout"], q["achieved_ratio"], q["even"]) for q in got] == [
        ("partitioned", 0.975, True),
        ("shards", 0.875, False),  # under the 0.95 gate
        ("partitioned", 1.0, False),  # as fast, but it lost events
    ]
    assert got[0]["redis_cpu_ratio"] == 1.2  # (1.17 / 7.8) / (1.0 / 8)


def test_the_report_has_every_row_and_says_what_is_not_even() -> None:
    rows = [
        R.row_of("one", _result(), redis_cpu=1.0),
        R.row_of("shards", _result(published=7000), redis_cpu=1.4),
    ]
    text = R.report(rows, {"cores": 2})
    assert text.count("\n| one |") == 1 and text.count("\n| shards |") == 1
    assert "shards at 1000/s: achieved **0.88x**" in text and "NOT even" in text
