"""The pure parts of ``benches/patterns.py``: the report from a canned run, and one
round of its scenarios on a small hub (the figures' shapes, not their values)::

    python -m pytest -n 0 benches/test_patterns.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from benches import patterns as P


def _canned() -> dict[str, Any]:
    one = {"exact": 10e-6, "new-topic": 8e-6, "new-matched": 20e-6}
    return {
        "machine": {"cpu": "test"},
        "conditions": {"counts": [0, 1000], "rounds": 3, "per_round": 5},
        "results": {
            "0": {**one, "held-exact": 6e-6, "deliveries-exact": 600_000.0},
            "1000": {
                **one,
                "exact": 12e-6,
                "new-topic": 9.6e-6,
                "held": 9e-6,
                "deliveries": 500_000.0,
            },
        },
        "one_pattern_over_1000_topics": {
            "first_subscribe_ms": 80.0,
            "subscribe_ms": 1.0,
            "resume_1000_events_ms": 3.0,
        },
        "others": 100_000,
    }


def test_the_report_gives_ratios_against_the_hub_without_patterns() -> None:
    text = P.report(_canned())
    rows = [line for line in text.splitlines() if line.startswith("| 1,000 ")]
    assert rows == ["| 1,000 | 12.00 | 1.20x | 9.60 | 1.20x | 20.00 | 9.00 | 500,000 |"]
    assert "| 0 | 10.00 | 1.00x | 8.00 | 1.00x | 20.00 | 6.00 | 600,000 |" in text
    assert "the first 80.0 ms" in text and "among 100,000 others" in text


def test_one_round_measures_every_scenario() -> None:
    async def main() -> list[dict[str, list[float]]]:
        found = []
        for count in (0, 20):
            built = await P.build(count)
            timings: dict[str, list[float]] = {}
            P.one_round(built, timings, 2)
            found.append(timings)
        return found

    without, with_patterns = asyncio.run(main())
    assert set(without) == {"exact", "held-exact", "new-topic", "new-matched", "deliveries-exact"}
    assert set(with_patterns) == {"exact", "held", "new-topic", "new-matched", "deliveries"}
    assert all(v[0] > 0 for v in [*without.values(), *with_patterns.values()])
