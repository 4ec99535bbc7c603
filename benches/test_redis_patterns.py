"""The pure parts of ``benches/redis_patterns.py``: the script without the directory
(the baseline the bench compares with) and the report from a canned run::

    python -m pytest -n 0 benches/test_redis_patterns.py
"""

from __future__ import annotations

from typing import Any

import pytest

from benches import redis_patterns as R
from sse_fast.brokers.redis import PUBLISH_SCRIPT
from sse_fast.brokers.redis._scripts import PARTITION_PUBLISH_SCRIPT


def test_the_baseline_script_is_the_publish_script_without_its_directory() -> None:
    baseline = R.without_directory(PUBLISH_SCRIPT)
    for gone in ("names", "births", "'born'", "NOMKSTREAM"):
        assert gone not in baseline, gone
    for kept in ("XADD", "XTRIM", "EXPIRE", "'PUBLISH', prefix .. 'c:'", "'r:'"):
        assert kept in baseline, kept
    with pytest.raises(ValueError, match="update without_directory"):
        R.without_directory(baseline)  # nothing to take out: the bench says so


def test_the_partition_baseline_is_the_partition_script_without_its_directory() -> None:
    baseline = R.without_partition_directory(PARTITION_PUBLISH_SCRIPT)
    for gone in ("ZADD", "ZRANGEBYSCORE", "'born'", "NOMKSTREAM"):
        assert gone not in baseline, gone
    for kept in ("XADD", "XTRIM", "EXPIRE", "redis.call(command, prefix .. 'c:'"):
        assert kept in baseline, kept
    with pytest.raises(ValueError, match="update without_partition_directory"):
        R.without_partition_directory(baseline)


def _nodes(scale: float) -> dict[str, Any]:
    return {
        "subscribe_first_ms": 76.0 * scale,
        "subscribe_ms": 2.5 * scale,
        "resume_1000_events_ms": 93.0 * scale,
        "lat_topics": 6,
        "last_id_characters": int(16 * scale),
        "latency_ms": {
            "held": {"median": 0.3 * scale, "p90": 0.4 * scale},
            "born": {"median": 1.1 * scale, "p90": 1.3 * scale},
        },
    }


def _canned() -> dict[str, Any]:
    script = {
        "existing": {"without": 20.0, "with": 21.0},
        "new": {"without": 22.0, "with": 33.0},
    }
    return {
        "machine": {"cpu": "test"},
        "conditions": {"rounds": 2, "calls": 10, "others": 100, "samples": 5},
        "script": {"one": script, "partitioned": script},
        "nodes": {"one": _nodes(1.0), "partitioned": _nodes(2.0)},
    }


def test_the_report_gives_the_scripts_ratio_and_the_nodes_figures() -> None:
    text = R.report(_canned())
    assert "| one sequence | an existing topic | 20.00 | 21.00 | 1.05x |" in text
    assert "| 128 partitions | a new topic | 22.00 | 33.00 | 1.50x |" in text
    assert "| open `big/*` over 1,000 topics, first | 76.00 | 152.00 | 2.00x |" in text
    assert "| publish on B to a new topic, to A's send (median) | 1.10 | 2.20 | 2.00x |" in text
    assert "16 characters with one sequence" in text and "32 with 128 partitions" in text
