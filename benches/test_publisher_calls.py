"""The pure parts of ``benches/publisher_calls.py``: the report from a canned run::

python -m pytest -n 0 benches/test_publisher_calls.py
"""

from __future__ import annotations

from benches import publisher_calls as P


def test_the_report_gives_both_ways_and_their_ratio() -> None:
    row = {"calls_per_s": 5000.0, "p50_ms": 10.0, "p99_ms": 20.0, "requests_per_call": 1.0}
    result = {
        "machine": {"cpu": "test"},
        "conditions": {"tasks": 64, "seconds": 1.0, "rounds": 1},
        "ways": {
            "together": {**row, "calls_per_s": 45000.0, "requests_per_call": 0.08},
            "one_per_call": row,
        },
    }
    text = P.report(result)
    assert "| go together (default) | 45,000 | 10.00 | 20.00 | 0.080 |" in text
    assert "| one request each | 5,000 |" in text
    assert "9.00x" in text
