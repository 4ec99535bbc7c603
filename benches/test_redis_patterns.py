"""The pure parts of ``benches/redis_patterns.py``: the script without the directory
(the baseline the bench compares with) and the report from a canned run::

    python -m pytest -n 0 benches/test_redis_patterns.py
"""

from __future__ import annotations

from typing import Any

import pytest

from benches import redis_patterns as R
from sse_fast.brokers.redis import PUBLISH_SCRIPT


def test_the_baseline_script_is_the_publish_script_without_its_directory() -> None:
    baseline = R.without_directory(PUBLISH_SCRIPT)
    for gone in ("names", "births", "'born'", "NOMKSTREAM"):
        assert gone not in baseline, gone
    for kept in ("XADD", "XTRIM", "EXPIRE", "'PUBLISH', prefix .. 'c:'", "'r:'"):
        assert kept in baseline, kept
    with pytest.raises(ValueError, match="update without_directory"):
        R.without_directory(baseline)  # nothing to take out: the bench says so


def _canned() -> dict[str, Any]:
    return {
        "machine": {"cpu": "test"},
        "conditions": {"rounds": 2, "calls": 10, "others": 100, "samples": 5},
        "script": {
            "existing": {"without": 20.0, "with": 21.0},
            "new": {"without": 22.0, "with": 33.0},
        },
        "nodes": {
            "subscribe_first_ms": 76.0,
            "subscribe_ms": 2.5,
            "resume_1000_events_ms": 93.0,
            "latency_ms": {
                "held": {"median": 0.3, "p90": 0.4},
                "born": {"median": 1.1, "p90": 1.3},
            },
        },
    }


def test_the_report_gives_the_scripts_ratio_and_the_nodes_figures() -> None:
    text = R.report(_canned())
    assert "| an existing topic | 20.00 | 21.00 | 1.05x |" in text
    assert "| a new topic | 22.00 | 33.00 | 1.50x |" in text
    assert "| open `big/*` over 1,000 topics, first | 76.0 |" in text
    assert "0.30 / 0.40" in text and "1.10 / 1.30" in text
